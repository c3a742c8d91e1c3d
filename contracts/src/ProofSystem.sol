// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title ProofSystem
/// @notice Registry of proof-of-work hashes that have already been paid for. JobMarketplace
///         (an authorised caller) marks each submitted proof hash as used, so the same proof
///         can never be claimed twice, in any session.
/// @dev The proof itself (a STARK or a mock) lives off-chain (S5); only its hash is recorded.
contract ProofSystem is Ownable {
    mapping(address => bool) public authorizedCallers;
    mapping(bytes32 => bool) public verifiedProofs;

    event AuthorizedCallerUpdated(address indexed caller, bool authorized);
    event ProofVerified(bytes32 indexed proofHash, address indexed prover, uint256 tokens);

    constructor() Ownable(msg.sender) {}

    function setAuthorizedCaller(address caller, bool authorized) external onlyOwner {
        require(caller != address(0), "Invalid caller");
        authorizedCallers[caller] = authorized;
        emit AuthorizedCallerUpdated(caller, authorized);
    }

    /// @notice Record `proofHash` as used by `prover` for `claimedTokens` of `modelId`.
    /// @return Always true; reverts if the hash was seen before or the caller is not authorised.
    function markProofUsed(bytes32 proofHash, address prover, uint256 claimedTokens, bytes32 modelId)
        external
        returns (bool)
    {
        modelId; // bound by the caller's session; kept in the signature for interface compatibility
        require(authorizedCallers[msg.sender], "Caller not authorized");
        require(proofHash != bytes32(0), "Empty proof hash");
        require(prover != address(0), "Invalid prover");
        require(!verifiedProofs[proofHash], "Proof already used");
        verifiedProofs[proofHash] = true;
        emit ProofVerified(proofHash, prover, claimedTokens);
        return true;
    }
}
