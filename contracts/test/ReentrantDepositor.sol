// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title ReentrantDepositor (test only)
/// @notice A depositor contract whose receive() tries to call back into JobMarketplace while it
///         is paying out. It records whether the re-entrant call succeeded and its revert data.
/// @dev Talks to the marketplace through encoded calls only, so it does not depend on its source.
contract ReentrantDepositor {
    enum Attack {
        None,
        Complete,
        WithdrawNative,
        Timeout
    }

    address public immutable market;
    Attack public attack;
    uint256 public targetJob;
    uint256 public withdrawAmount;
    /// @notice When true, receive() reverts after its attempt (a depositor that rejects ETH).
    bool public rejectPayments;

    uint256 public attempts;
    bool public lastAttemptSucceeded;
    bytes public lastRevertData;
    uint256 public received;

    constructor(address _market) {
        market = _market;
    }

    function configure(Attack _attack, uint256 jobId, uint256 amount, bool reject) external {
        attack = _attack;
        targetJob = jobId;
        withdrawAmount = amount;
        rejectPayments = reject;
    }

    /// @notice Forward any call to the marketplace (value included) as this contract.
    function execute(bytes calldata data) external payable returns (bytes memory) {
        (bool ok, bytes memory ret) = market.call{value: msg.value}(data);
        if (!ok) {
            assembly {
                revert(add(ret, 32), mload(ret))
            }
        }
        return ret;
    }

    receive() external payable {
        received += msg.value;
        if (attack != Attack.None) {
            attempts += 1;
            (bool ok, bytes memory ret) = market.call(_attackCall());
            lastAttemptSucceeded = ok;
            lastRevertData = ret;
        }
        require(!rejectPayments, "ReentrantDepositor: payment rejected");
    }

    function _attackCall() private view returns (bytes memory) {
        if (attack == Attack.Complete) {
            return abi.encodeWithSignature("completeSessionJob(uint256,string)", targetJob, "reentered");
        }
        if (attack == Attack.WithdrawNative) {
            return abi.encodeWithSignature("withdrawNative(uint256)", withdrawAmount);
        }
        return abi.encodeWithSignature("triggerSessionTimeout(uint256)", targetJob);
    }
}
