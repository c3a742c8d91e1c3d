// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @title ModelRegistry
/// @notice The list of models hosts may serve. A model is identified by
///         keccak256(abi.encodePacked(huggingfaceRepo, "/", fileName)) and pinned to the SHA-256
///         of its weights file. The owner adds models (approval tier 1, "trusted"), can switch
///         them off and on again, and can set a per-model proof rate limit that JobMarketplace
///         reads when a host submits a proof of work.
///
///         Anyone may also propose a model (tier 2, "community") by paying PROPOSAL_FEE in the
///         governance token (FAB). For PROPOSAL_DURATION, holders lock FAB for or against it;
///         FAB voted in the last EXTENSION_WINDOW counts as late, and EXTENSION_THRESHOLD of
///         late FAB extends the vote by EXTENSION_DURATION (at most MAX_EXTENSIONS times). Once
///         the vote is over anyone executes the proposal: with at least APPROVAL_THRESHOLD for
///         and more for than against, the model is added and the fee goes back to the
///         proposer; otherwise the fee is kept for the owner (withdrawRejectedFees). Voters take
///         their FAB back after execution (withdrawVotes). A model may be proposed again
///         REPROPOSAL_COOLDOWN after its last proposal was executed.
/// @dev Plain (non-proxy) deployment, with the external interface of the deployed upstream
///      registry.
contract ModelRegistry is Ownable, ReentrancyGuard {
    using SafeERC20 for IERC20;

    struct Model {
        string huggingfaceRepo;
        string fileName;
        bytes32 sha256Hash;
        uint256 approvalTier;
        bool active;
        uint256 timestamp;
    }

    /// @notice A community proposal, in the layout of the upstream registry's `proposals` getter.
    struct ModelProposal {
        bytes32 modelId;
        address proposer;
        uint256 votesFor;
        uint256 votesAgainst;
        uint256 proposalTime;
        bool executed;
        Model modelData;
        uint256 endTime;
        uint8 extensionCount;
    }

    /// @notice Approval tier of models added by the owner.
    uint256 public constant TRUSTED_TIER = 1;
    /// @notice Approval tier of models added by a community vote.
    uint256 public constant COMMUNITY_TIER = 2;
    /// @notice Rate limit (tokens per second) of a model that has no explicit limit.
    uint256 public constant DEFAULT_RATE_LIMIT = 1000;
    /// @notice Lowest per-model limit the owner may set (tokens per second).
    uint256 public constant MIN_RATE_LIMIT = 10;
    /// @notice Highest per-model limit the owner may set (tokens per second).
    uint256 public constant MAX_RATE_LIMIT = 100_000;

    // Governance parameters (the upstream registry's values).
    /// @notice How long a proposal stays open for votes.
    uint256 public constant PROPOSAL_DURATION = 3 days;
    /// @notice FAB voted in favour that approves a proposed model (100,000 FAB).
    uint256 public constant APPROVAL_THRESHOLD = 100_000 * 10 ** 18;
    /// @notice FAB a proposer pays (100 FAB).
    uint256 public constant PROPOSAL_FEE = 100 * 10 ** 18;
    /// @notice Late votes (FAB) that extend a proposal's voting period.
    uint256 public constant EXTENSION_THRESHOLD = 10_000 * 10 ** 18;
    /// @notice The final stretch of a vote in which late votes count towards an extension.
    uint256 public constant EXTENSION_WINDOW = 4 hours;
    /// @notice How much one extension adds.
    uint256 public constant EXTENSION_DURATION = 1 days;
    /// @notice At most this many extensions per proposal.
    uint256 public constant MAX_EXTENSIONS = 3;
    /// @notice Wait after an executed proposal before the same model can be proposed again.
    uint256 public constant REPROPOSAL_COOLDOWN = 30 days;

    /// @notice Token of the proposal fee and of the votes (FAB).
    address public immutable governanceToken;

    mapping(bytes32 => Model) public models;
    bytes32[] public modelList;
    /// @notice Explicit per-model limit in tokens per second; 0 means DEFAULT_RATE_LIMIT.
    mapping(bytes32 => uint256) public modelMaxTokensPerSecond;

    mapping(bytes32 => ModelProposal) public proposals;
    /// @notice FAB each voter has locked on a proposal (withdrawn after execution).
    mapping(bytes32 => mapping(address => uint256)) public votes;
    bytes32[] public activeProposals;
    /// @notice Late FAB on a proposal since its last extension.
    mapping(bytes32 => uint256) public lateVotes;
    mapping(bytes32 => uint256) public lastProposalExecutionTime;
    /// @notice Fees of rejected proposals held for the owner.
    uint256 public accumulatedRejectedFees;

    event ModelAdded(bytes32 indexed modelId, string huggingfaceRepo, string fileName, uint256 tier);
    event ModelDeactivated(bytes32 indexed modelId);
    event ModelReactivated(bytes32 indexed modelId);
    event ModelRateLimitUpdated(bytes32 indexed modelId, uint256 maxTokensPerSecond);
    event ModelProposed(bytes32 indexed modelId, address indexed proposer, string huggingfaceRepo);
    event VoteCast(bytes32 indexed modelId, address indexed voter, uint256 amount, bool support);
    event VotingExtended(bytes32 indexed modelId, uint256 newEndTime, uint8 extensionCount);
    event ProposalExecuted(bytes32 indexed modelId, bool approved);
    event RejectedFeesWithdrawn(address indexed recipient, uint256 amount);

    constructor(address _governanceToken) Ownable(msg.sender) {
        governanceToken = _governanceToken;
    }

    // ----------------------------------------------------------------- owner

    function addTrustedModel(string calldata huggingfaceRepo, string calldata fileName, bytes32 sha256Hash)
        external
        onlyOwner
    {
        _addModel(huggingfaceRepo, fileName, sha256Hash);
    }

    function batchAddTrustedModels(string[] calldata repos, string[] calldata fileNames, bytes32[] calldata hashes)
        external
        onlyOwner
    {
        require(repos.length > 0, "No models given");
        require(repos.length == fileNames.length && repos.length == hashes.length, "Array lengths differ");
        for (uint256 i = 0; i < repos.length; i++) {
            _addModel(repos[i], fileNames[i], hashes[i]);
        }
    }

    function deactivateModel(bytes32 modelId) external onlyOwner {
        require(_exists(modelId), "Model not found");
        require(models[modelId].active, "Model already inactive");
        models[modelId].active = false;
        emit ModelDeactivated(modelId);
    }

    function reactivateModel(bytes32 modelId) external onlyOwner {
        require(_exists(modelId), "Model not found");
        require(!models[modelId].active, "Model already active");
        models[modelId].active = true;
        emit ModelReactivated(modelId);
    }

    /// @notice Set how many tokens per second a host may claim for `modelId`
    ///         (JobMarketplace allows twice this rate to absorb bursts).
    function setModelRateLimit(bytes32 modelId, uint256 maxTokensPerSec) external onlyOwner {
        require(_exists(modelId), "Model not found");
        require(
            maxTokensPerSec >= MIN_RATE_LIMIT && maxTokensPerSec <= MAX_RATE_LIMIT, "Rate limit out of range"
        );
        modelMaxTokensPerSecond[modelId] = maxTokensPerSec;
        emit ModelRateLimitUpdated(modelId, maxTokensPerSec);
    }

    /// @notice Send the owner `amount` of the fees kept from rejected proposals.
    function withdrawRejectedFees(uint256 amount) external onlyOwner nonReentrant {
        require(amount > 0, "Amount must be positive");
        require(amount <= accumulatedRejectedFees, "Exceeds rejected fees");
        accumulatedRejectedFees -= amount;
        emit RejectedFeesWithdrawn(msg.sender, amount);
        IERC20(governanceToken).safeTransfer(msg.sender, amount);
    }

    // ------------------------------------------------------------ governance

    /// @notice Propose a model for a community vote, paying PROPOSAL_FEE FAB (approve it first).
    function proposeModel(string calldata huggingfaceRepo, string calldata fileName, bytes32 sha256Hash)
        external
        nonReentrant
    {
        _checkModel(huggingfaceRepo, fileName, sha256Hash);
        bytes32 modelId = getModelId(huggingfaceRepo, fileName);
        require(!_exists(modelId), "Model already exists");
        ModelProposal storage p = proposals[modelId];
        require(p.proposalTime == 0 || p.executed, "Proposal already active");
        uint256 last = lastProposalExecutionTime[modelId];
        require(last == 0 || block.timestamp >= last + REPROPOSAL_COOLDOWN, "Reproposal cooldown active");
        proposals[modelId] = ModelProposal({
            modelId: modelId,
            proposer: msg.sender,
            votesFor: 0,
            votesAgainst: 0,
            proposalTime: block.timestamp,
            executed: false,
            modelData: Model(huggingfaceRepo, fileName, sha256Hash, COMMUNITY_TIER, false, 0),
            endTime: block.timestamp + PROPOSAL_DURATION,
            extensionCount: 0
        });
        lateVotes[modelId] = 0;
        activeProposals.push(modelId);
        emit ModelProposed(modelId, msg.sender, huggingfaceRepo);
        IERC20(governanceToken).safeTransferFrom(msg.sender, address(this), PROPOSAL_FEE);
    }

    /// @notice Lock `amount` FAB for (`support`) or against an open proposal (approve it first).
    function voteOnProposal(bytes32 modelId, uint256 amount, bool support) external nonReentrant {
        ModelProposal storage p = proposals[modelId];
        require(p.proposalTime != 0, "Proposal not found");
        require(!p.executed, "Proposal already executed");
        require(block.timestamp < p.endTime, "Voting ended");
        require(amount > 0, "Amount must be positive");
        votes[modelId][msg.sender] += amount;
        if (support) p.votesFor += amount;
        else p.votesAgainst += amount;
        emit VoteCast(modelId, msg.sender, amount, support);
        if (block.timestamp >= p.endTime - EXTENSION_WINDOW) {
            uint256 late = lateVotes[modelId] + amount;
            if (late >= EXTENSION_THRESHOLD && p.extensionCount < MAX_EXTENSIONS) {
                p.endTime += EXTENSION_DURATION;
                p.extensionCount += 1;
                late = 0;
                emit VotingExtended(modelId, p.endTime, p.extensionCount);
            }
            lateVotes[modelId] = late;
        }
        IERC20(governanceToken).safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Close a proposal whose vote is over: add the model if it won, else keep the fee.
    function executeProposal(bytes32 modelId) external nonReentrant {
        ModelProposal storage p = proposals[modelId];
        require(p.proposalTime != 0, "Proposal not found");
        require(!p.executed, "Proposal already executed");
        require(block.timestamp >= p.endTime, "Voting still active");
        p.executed = true;
        lastProposalExecutionTime[modelId] = block.timestamp;
        _removeActive(modelId);
        bool approved = p.votesFor >= APPROVAL_THRESHOLD && p.votesFor > p.votesAgainst;
        emit ProposalExecuted(modelId, approved);
        if (approved) {
            Model storage m = p.modelData;
            _store(modelId, m.huggingfaceRepo, m.fileName, m.sha256Hash, COMMUNITY_TIER);
            IERC20(governanceToken).safeTransfer(p.proposer, PROPOSAL_FEE);
        } else {
            accumulatedRejectedFees += PROPOSAL_FEE;
        }
    }

    /// @notice Take back the FAB you voted with, once the proposal was executed.
    function withdrawVotes(bytes32 modelId) external nonReentrant {
        require(proposals[modelId].executed, "Proposal not executed");
        uint256 amount = votes[modelId][msg.sender];
        require(amount > 0, "No votes to withdraw");
        votes[modelId][msg.sender] = 0;
        IERC20(governanceToken).safeTransfer(msg.sender, amount);
    }

    // ----------------------------------------------------------------- views

    function getModelId(string calldata repo, string calldata fileName) public pure returns (bytes32) {
        return keccak256(abi.encodePacked(repo, "/", fileName));
    }

    function isModelApproved(bytes32 modelId) external view returns (bool) {
        return models[modelId].active;
    }

    /// @notice True for an active model that the owner added (tier 1).
    function isTrustedModel(bytes32 modelId) external view returns (bool) {
        Model storage m = models[modelId];
        return m.active && m.approvalTier == TRUSTED_TIER;
    }

    /// @notice The model record; all fields are zero for an unknown id (timestamp == 0).
    function getModel(bytes32 modelId) external view returns (Model memory) {
        return models[modelId];
    }

    function getModelHash(bytes32 modelId) external view returns (bytes32) {
        return models[modelId].sha256Hash;
    }

    function getAllModels() external view returns (bytes32[] memory) {
        return modelList;
    }

    /// @notice Proposals not yet executed.
    function getActiveProposals() external view returns (bytes32[] memory) {
        return activeProposals;
    }

    /// @notice Tokens per second a host may be paid for on `modelId` (DEFAULT_RATE_LIMIT if unset).
    function getModelRateLimit(bytes32 modelId) external view returns (uint256) {
        uint256 limit = modelMaxTokensPerSecond[modelId];
        return limit == 0 ? DEFAULT_RATE_LIMIT : limit;
    }

    // -------------------------------------------------------------- internal

    function _addModel(string calldata repo, string calldata fileName, bytes32 sha256Hash) private {
        _checkModel(repo, fileName, sha256Hash);
        bytes32 modelId = getModelId(repo, fileName);
        require(!_exists(modelId), "Model already exists");
        _store(modelId, repo, fileName, sha256Hash, TRUSTED_TIER);
    }

    function _checkModel(string calldata repo, string calldata fileName, bytes32 sha256Hash) private pure {
        require(bytes(repo).length > 0, "Empty repository");
        require(bytes(fileName).length > 0, "Empty file name");
        require(sha256Hash != bytes32(0), "Empty model hash");
    }

    /// @dev A model approved by the owner or by a vote. An owner's model added while a vote on
    ///      it was open wins: the vote, if approved, then leaves the model as it is.
    function _store(bytes32 modelId, string memory repo, string memory fileName, bytes32 sha256Hash, uint256 tier)
        private
    {
        if (_exists(modelId)) return;
        models[modelId] = Model({
            huggingfaceRepo: repo,
            fileName: fileName,
            sha256Hash: sha256Hash,
            approvalTier: tier,
            active: true,
            timestamp: block.timestamp
        });
        modelList.push(modelId);
        emit ModelAdded(modelId, repo, fileName, tier);
    }

    function _removeActive(bytes32 modelId) private {
        uint256 n = activeProposals.length;
        for (uint256 i = 0; i < n; i++) {
            if (activeProposals[i] == modelId) {
                activeProposals[i] = activeProposals[n - 1];
                activeProposals.pop();
                return;
            }
        }
    }

    function _exists(bytes32 modelId) private view returns (bool) {
        return models[modelId].timestamp != 0;
    }
}
