// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title ModelRegistry
/// @notice The list of models hosts may serve. A model is identified by
///         keccak256(abi.encodePacked(huggingfaceRepo, "/", fileName)) and pinned to the SHA-256
///         of its weights file. The owner adds models (approval tier 1, "trusted"), can switch
///         them off and on again, and can set a per-model proof rate limit that JobMarketplace
///         reads when a host submits a proof of work.
/// @dev Plain (non-proxy) deployment. Community proposals and token voting (tier 2) are not
///      implemented; `governanceToken` is only recorded so a future governance module can use it.
///      The governance constants and views of the deployed upstream registry exist with the
///      same signatures and values, because clients read them (upstream's ModelManager checks
///      `APPROVAL_THRESHOLD()` when it starts): the views answer as a registry on which no
///      proposal was ever made.
contract ModelRegistry is Ownable {
    struct Model {
        string huggingfaceRepo;
        string fileName;
        bytes32 sha256Hash;
        uint256 approvalTier;
        bool active;
        uint256 timestamp;
    }

    /// @notice A community proposal, in the layout of the upstream registry's `proposals` getter.
    ///         None is ever created here, so every read returns the all-zero record.
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
    /// @notice Rate limit (tokens per second) of a model that has no explicit limit.
    uint256 public constant DEFAULT_RATE_LIMIT = 1000;
    /// @notice Lowest per-model limit the owner may set (tokens per second).
    uint256 public constant MIN_RATE_LIMIT = 10;
    /// @notice Highest per-model limit the owner may set (tokens per second).
    uint256 public constant MAX_RATE_LIMIT = 100_000;

    // Governance parameters of the upstream registry (same values), read by clients; no
    // proposal or vote can be made here, so they constrain nothing.
    /// @notice How long a proposal would stay open for votes.
    uint256 public constant PROPOSAL_DURATION = 3 days;
    /// @notice FAB voted in favour that would approve a proposed model (100,000 FAB).
    uint256 public constant APPROVAL_THRESHOLD = 100_000 * 10 ** 18;
    /// @notice FAB a proposer would pay (100 FAB).
    uint256 public constant PROPOSAL_FEE = 100 * 10 ** 18;
    /// @notice Late votes (FAB) that would extend a proposal's voting period.
    uint256 public constant EXTENSION_THRESHOLD = 10_000 * 10 ** 18;
    /// @notice The final stretch of a vote in which late votes count towards an extension.
    uint256 public constant EXTENSION_WINDOW = 4 hours;
    /// @notice How much one extension would add.
    uint256 public constant EXTENSION_DURATION = 1 days;
    /// @notice At most this many extensions per proposal.
    uint256 public constant MAX_EXTENSIONS = 3;
    /// @notice Wait before a rejected model could be proposed again.
    uint256 public constant REPROPOSAL_COOLDOWN = 30 days;

    /// @notice Token that would weigh community votes; stored only (see contract notes).
    address public immutable governanceToken;

    mapping(bytes32 => Model) public models;
    bytes32[] public modelList;
    /// @notice Explicit per-model limit in tokens per second; 0 means DEFAULT_RATE_LIMIT.
    mapping(bytes32 => uint256) public modelMaxTokensPerSecond;

    // Governance state of the upstream registry: declared for its getters, never written.
    mapping(bytes32 => ModelProposal) public proposals;
    mapping(bytes32 => mapping(address => uint256)) public votes;
    bytes32[] public activeProposals;
    mapping(bytes32 => uint256) public lateVotes;
    mapping(bytes32 => uint256) public lastProposalExecutionTime;
    /// @notice Fees of rejected proposals held for the owner; always 0 (no proposals).
    uint256 public accumulatedRejectedFees;

    event ModelAdded(bytes32 indexed modelId, string huggingfaceRepo, string fileName, uint256 tier);
    event ModelDeactivated(bytes32 indexed modelId);
    event ModelReactivated(bytes32 indexed modelId);
    event ModelRateLimitUpdated(bytes32 indexed modelId, uint256 maxTokensPerSecond);

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

    /// @notice Proposals still open for votes: always empty here.
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
        require(bytes(repo).length > 0, "Empty repository");
        require(bytes(fileName).length > 0, "Empty file name");
        require(sha256Hash != bytes32(0), "Empty model hash");
        bytes32 modelId = getModelId(repo, fileName);
        require(!_exists(modelId), "Model already exists");
        models[modelId] = Model({
            huggingfaceRepo: repo,
            fileName: fileName,
            sha256Hash: sha256Hash,
            approvalTier: TRUSTED_TIER,
            active: true,
            timestamp: block.timestamp
        });
        modelList.push(modelId);
        emit ModelAdded(modelId, repo, fileName, TRUSTED_TIER);
    }

    function _exists(bytes32 modelId) private view returns (bool) {
        return models[modelId].timestamp != 0;
    }
}
