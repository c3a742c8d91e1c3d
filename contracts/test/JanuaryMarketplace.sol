// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title JanuaryMarketplace (test only)
/// @notice A stand-in with the external shape of the JobMarketplace generation Fabstir deployed
///         in January 2026, written from its published interface: 5- and 7-argument model
///         session creation without a proof timeout window, a `sessionJobs` getter of 17 fields
///         (no `proofTimeoutWindow`), and a `submitProofOfWork` that carries a host signature.
///         It lacks everything the February 2026 generation added (`DEFAULT_PROOF_TIMEOUT`,
///         delegates, `minTokensFee`, ...). Tests point the SDK and the host at it to check
///         that they refuse it by name instead of failing on a raw revert.
/// @dev Only the bookkeeping a test needs: no escrow checks, no settlement, no token transfers.
contract JanuaryMarketplace {
    struct Job {
        address depositor;
        address host;
        address paymentToken;
        uint256 deposit;
        uint256 pricePerToken;
        uint256 tokensUsed;
        uint256 maxDuration;
        uint256 startTime;
        uint256 lastProofTime;
        uint256 proofInterval;
        uint8 status;
        bytes32 lastProofHash;
    }

    address public immutable nodeRegistry;
    address public immutable hostEarnings;
    address public immutable proofSystem;
    uint256 public constant disputeWindow = 30;
    uint256 public nextJobId = 1;

    mapping(uint256 => Job) private jobs;
    mapping(uint256 => bytes32) public sessionModel;

    event SessionJobCreated(uint256 indexed jobId, address indexed depositor, address indexed host, uint256 deposit);

    constructor(address _nodeRegistry, address _hostEarnings, address _proofSystem) {
        nodeRegistry = _nodeRegistry;
        hostEarnings = _hostEarnings;
        proofSystem = _proofSystem;
    }

    function createSessionJobForModel(
        address host,
        bytes32 modelId,
        uint256 pricePerToken,
        uint256 maxDuration,
        uint256 proofInterval
    ) external payable returns (uint256) {
        return _open(host, modelId, address(0), msg.value, pricePerToken, maxDuration, proofInterval);
    }

    function createSessionJobForModelWithToken(
        address host,
        bytes32 modelId,
        address token,
        uint256 deposit,
        uint256 pricePerToken,
        uint256 maxDuration,
        uint256 proofInterval
    ) external returns (uint256) {
        return _open(host, modelId, token, deposit, pricePerToken, maxDuration, proofInterval);
    }

    function submitProofOfWork(
        uint256 jobId,
        uint256 tokensClaimed,
        bytes32 proofHash,
        bytes calldata signature,
        string calldata,
        string calldata
    ) external {
        Job storage job = jobs[jobId];
        require(msg.sender == job.host, "Only host can submit proof");
        require(signature.length == 65, "Invalid signature length");
        job.tokensUsed += tokensClaimed;
        job.lastProofTime = block.timestamp;
        job.lastProofHash = proofHash;
    }

    /// @notice The 17 fields of the January getter, ABI-encoded as a public getter would return
    ///         them (the two strings are empty). Written out by hand because the legacy code
    ///         generator cannot hold 17 return values on its stack.
    function sessionJobs(uint256 jobId) external view {
        Job storage job = jobs[jobId];
        uint256[19] memory out;
        out[0] = job.startTime == 0 ? 0 : jobId;
        out[1] = uint256(uint160(job.depositor));
        out[2] = uint256(uint160(job.host));
        out[3] = uint256(uint160(job.paymentToken));
        out[4] = job.deposit;
        out[5] = job.pricePerToken;
        out[6] = job.tokensUsed;
        out[7] = job.maxDuration;
        out[8] = job.startTime;
        out[9] = job.lastProofTime;
        out[10] = job.proofInterval;
        out[11] = job.status;
        // 12 withdrawnByHost, 13 refundedToUser: 0
        out[14] = 17 * 32; // conversationCID: offset of an empty string
        out[15] = uint256(job.lastProofHash);
        out[16] = 18 * 32; // lastProofCID: offset of an empty string
        // 17, 18: the two strings' lengths, 0
        assembly {
            return(out, 608)
        }
    }

    function _open(
        address host,
        bytes32 modelId,
        address token,
        uint256 deposit,
        uint256 pricePerToken,
        uint256 maxDuration,
        uint256 proofInterval
    ) private returns (uint256 jobId) {
        jobId = nextJobId++;
        Job storage job = jobs[jobId];
        job.depositor = msg.sender;
        job.host = host;
        job.paymentToken = token;
        job.deposit = deposit;
        job.pricePerToken = pricePerToken;
        job.maxDuration = maxDuration;
        job.startTime = block.timestamp;
        job.lastProofTime = block.timestamp;
        job.proofInterval = proofInterval;
        sessionModel[jobId] = modelId;
        emit SessionJobCreated(jobId, msg.sender, host, deposit);
    }
}
