// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {LowLevelCall} from "@openzeppelin/contracts/utils/LowLevelCall.sol";
import {NodeRegistry} from "./NodeRegistry.sol";
import {ModelRegistry} from "./ModelRegistry.sol";
import {HostEarnings} from "./HostEarnings.sol";
import {ProofSystem} from "./ProofSystem.sol";

/// @title JobMarketplace
/// @notice Escrow for LLM inference sessions. A user (the depositor) locks a deposit in ETH or an
///         accepted ERC-20 for a session with a registered host and model. The host proves work
///         with submitProofOfWork; at completion or timeout the proven tokens are paid:
///         hostPayment = tokensUsed * pricePerToken / PRICE_PRECISION, of which feeBasisPoints
///         stay here for the treasury and the rest goes to HostEarnings for the host; the
///         unspent deposit goes back to the depositor.
/// @dev Plain (non-proxy) deployment; see docs/contracts.md for every deviation from upstream.
contract JobMarketplace is Ownable, Pausable, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    enum SessionStatus {
        Active,
        Completed,
        TimedOut
    }

    struct ProofSubmission {
        bytes32 proofHash;
        uint256 tokensClaimed;
        uint256 timestamp;
        bool verified;
        string deltaCID;
    }

    /// @dev The public getter skips `proofs`, so sessionJobs(id) returns the 18 other fields in order.
    struct SessionJob {
        uint256 id;
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
        uint256 proofTimeoutWindow;
        SessionStatus status;
        ProofSubmission[] proofs;
        uint256 withdrawnByHost;
        uint256 refundedToUser;
        string conversationCID;
        bytes32 lastProofHash;
        string lastProofCID;
    }

    struct ChainConfig {
        address nativeWrapper;
        address stablecoin;
        uint256 minDeposit;
        string nativeTokenSymbol;
    }

    /// @dev Session creation arguments, bundled to keep the stack shallow.
    struct NewSession {
        address depositor;
        address host;
        bytes32 modelId;
        address token;
        uint256 deposit;
        uint256 pricePerToken;
        uint256 maxDuration;
        uint256 proofInterval;
        uint256 proofTimeoutWindow;
    }

    uint256 public constant MIN_DEPOSIT = 0.0001 ether;
    uint256 public constant MAX_NATIVE_DEPOSIT = 1000 ether;
    uint256 public constant USDC_MIN_DEPOSIT = 500_000; // 0.50 USDC
    uint256 public constant USDC_MAX_DEPOSIT = 1e12; // 1,000,000 USDC
    uint256 public constant MIN_PROVEN_TOKENS = 100;
    uint256 public constant PRICE_PRECISION = 1000;
    uint256 public constant MIN_PROOF_TIMEOUT = 60;
    uint256 public constant MAX_PROOF_TIMEOUT = 3600;
    uint256 public constant DEFAULT_PROOF_TIMEOUT = 300;
    uint256 public constant MAX_SESSION_DURATION = 365 days;
    uint256 public constant MAX_DISPUTE_WINDOW = 7 days;
    uint256 public constant BASIS_POINTS = 10_000;
    /// @notice A proof may claim up to this many times the model's per-second rate limit.
    uint256 public constant RATE_LIMIT_BURST = 2;

    address private constant NATIVE = address(0);

    NodeRegistry public immutable nodeRegistry;
    HostEarnings public immutable hostEarnings;
    uint256 public immutable feeBasisPoints;
    uint256 public immutable disputeWindow;

    ProofSystem public proofSystem;
    address public treasuryAddress;
    address public usdcAddress;
    /// @notice The early-cancellation fee, in tokens: a depositor who completes a session before
    ///         the host proved any work pays for this many tokens at the session's price (capped
    ///         at the deposit), settled like proven work. 0, the default here, charges nothing.
    uint256 public minTokensFee;
    ChainConfig public chainConfig;
    bool private _chainConfigSet;

    uint256 public nextJobId;
    mapping(uint256 => SessionJob) public sessionJobs;
    mapping(uint256 => bytes32) public sessionModel;
    mapping(address => uint256[]) public userSessions;
    mapping(address => uint256[]) public hostSessions;

    mapping(address => bool) public acceptedTokens;
    mapping(address => uint256) public tokenMinDeposits;
    mapping(address => uint256) public tokenMaxDeposits;

    uint256 public accumulatedTreasuryNative;
    mapping(address => uint256) public accumulatedTreasuryTokens;

    mapping(address => uint256) public userDepositsNative;
    mapping(address => mapping(address => uint256)) public userDepositsToken;
    mapping(address => mapping(address => bool)) public isAuthorizedDelegate;

    // depositor => token (NATIVE for ETH) => deposits of the depositor's active sessions
    mapping(address => mapping(address => uint256)) private _locked;
    mapping(uint256 => bool) private _fundedFromDeposit;

    error NotDelegate();
    error ERC20Only();
    error BadDelegateParams();

    event SessionJobCreated(uint256 indexed jobId, address indexed depositor, address indexed host, uint256 deposit);
    event SessionJobCreatedForModel(
        uint256 indexed jobId, address indexed depositor, address indexed host, bytes32 modelId, uint256 deposit
    );
    event SessionCreatedByDepositor(
        uint256 indexed sessionId, address indexed depositor, address indexed host, uint256 deposit
    );
    event SessionCreatedByDelegate(
        uint256 indexed sessionId,
        address indexed payer,
        address indexed delegate,
        address host,
        bytes32 modelId,
        uint256 amount
    );
    event DelegateAuthorized(address indexed depositor, address indexed delegate, bool authorized);
    event ProofSubmitted(
        uint256 indexed jobId,
        address indexed host,
        uint256 tokensClaimed,
        bytes32 proofHash,
        string proofCID,
        string deltaCID
    );
    event SessionCompleted(uint256 indexed jobId, uint256 totalTokensUsed, uint256 hostEarnings, uint256 userRefund);
    event SessionCompletedBy(
        uint256 indexed jobId,
        address indexed completedBy,
        uint256 tokensUsed,
        uint256 paymentAmount,
        uint256 refundAmount
    );
    event SessionTimedOut(uint256 indexed jobId, uint256 hostEarnings, uint256 userRefund);
    event PaymentSent(address indexed recipient, uint256 amount);
    event RefundCreditedToDeposit(
        uint256 indexed jobId, address indexed depositor, uint256 amount, address indexed token
    );
    event DepositReceived(address indexed depositor, uint256 amount, address indexed token);
    event WithdrawalProcessed(address indexed depositor, uint256 amount, address indexed token);
    event TreasuryWithdrawal(address indexed token, uint256 amount);
    event TokenAccepted(address indexed token, uint256 minDeposit, uint256 maxDeposit);
    event TokenMinDepositUpdated(address indexed token, uint256 oldMinDeposit, uint256 newMinDeposit);
    event TokenMaxDepositUpdated(address indexed token, uint256 oldMaxDeposit, uint256 newMaxDeposit);
    event ContractPaused(address indexed by);
    event ContractUnpaused(address indexed by);
    event TreasuryUpdated(address indexed newTreasury);
    event ProofSystemUpdated(address indexed newProofSystem);
    event UsdcAddressUpdated(address indexed usdc);
    event MinTokensFeeUpdated(uint256 fee);
    event ChainConfigInitialized(address nativeWrapper, address stablecoin, uint256 minDeposit, string nativeTokenSymbol);

    modifier onlyTreasury() {
        require(msg.sender == treasuryAddress, "Only treasury");
        _;
    }

    modifier onlyTreasuryOrOwner() {
        require(msg.sender == treasuryAddress || msg.sender == owner(), "Only treasury or owner");
        _;
    }

    constructor(address _nodeRegistry, address _hostEarnings, uint256 _feeBasisPoints, uint256 _disputeWindow)
        Ownable(msg.sender)
    {
        require(_nodeRegistry != address(0), "Invalid node registry");
        require(_hostEarnings != address(0), "Invalid host earnings");
        require(_feeBasisPoints <= BASIS_POINTS, "Fee above 100%");
        require(_disputeWindow > 0 && _disputeWindow <= MAX_DISPUTE_WINDOW, "Invalid dispute window");
        nodeRegistry = NodeRegistry(_nodeRegistry);
        hostEarnings = HostEarnings(payable(_hostEarnings));
        feeBasisPoints = _feeBasisPoints;
        disputeWindow = _disputeWindow;
        treasuryAddress = msg.sender;
        nextJobId = 1;
    }

    // ====================================================== session creation

    /// @notice Open a session paid in ETH; the deposit is msg.value.
    function createSessionJobForModel(
        address host,
        bytes32 modelId,
        uint256 pricePerToken,
        uint256 maxDuration,
        uint256 proofInterval,
        uint256 proofTimeoutWindow
    ) external payable whenNotPaused nonReentrant returns (uint256 jobId) {
        jobId = _open(
            NewSession(
                msg.sender, host, modelId, NATIVE, msg.value, pricePerToken, maxDuration, proofInterval, proofTimeoutWindow
            )
        );
    }

    /// @notice Open a session paid in an accepted ERC-20; `deposit` is pulled from the caller.
    function createSessionJobForModelWithToken(
        address host,
        bytes32 modelId,
        address token,
        uint256 deposit,
        uint256 pricePerToken,
        uint256 maxDuration,
        uint256 proofInterval,
        uint256 proofTimeoutWindow
    ) external whenNotPaused nonReentrant returns (uint256 jobId) {
        require(token != NATIVE, "Use createSessionJobForModel for native");
        jobId = _open(
            NewSession(
                msg.sender, host, modelId, token, deposit, pricePerToken, maxDuration, proofInterval, proofTimeoutWindow
            )
        );
        IERC20(token).safeTransferFrom(msg.sender, address(this), deposit);
    }

    /// @notice Open a session funded from the caller's pre-funded deposit (paymentToken 0 = ETH).
    ///         The unspent part of such a session is credited back to that deposit balance.
    function createSessionFromDepositForModel(
        bytes32 modelId,
        address host,
        address paymentToken,
        uint256 deposit,
        uint256 pricePerToken,
        uint256 maxDuration,
        uint256 proofInterval,
        uint256 proofTimeoutWindow
    ) external whenNotPaused nonReentrant returns (uint256 sessionId) {
        require(_depositOf(msg.sender, paymentToken) >= deposit, "Insufficient deposit balance");
        _setDeposit(msg.sender, paymentToken, _depositOf(msg.sender, paymentToken) - deposit);
        sessionId = _open(
            NewSession(
                msg.sender,
                host,
                modelId,
                paymentToken,
                deposit,
                pricePerToken,
                maxDuration,
                proofInterval,
                proofTimeoutWindow
            )
        );
        _fundedFromDeposit[sessionId] = true;
        emit SessionCreatedByDepositor(sessionId, msg.sender, host, deposit);
    }

    /// @notice Open an ERC-20 session for `payer`, who authorised the caller with authorizeDelegate.
    ///         `amount` is pulled from the payer's allowance; the payer is the session's depositor.
    function createSessionForModelAsDelegate(
        address payer,
        bytes32 modelId,
        address host,
        address paymentToken,
        uint256 amount,
        uint256 pricePerToken,
        uint256 maxDuration,
        uint256 proofInterval,
        uint256 proofTimeoutWindow
    ) external whenNotPaused nonReentrant returns (uint256 sessionId) {
        if (payer == address(0) || amount == 0) revert BadDelegateParams();
        if (!isAuthorizedDelegate[payer][msg.sender]) revert NotDelegate();
        if (paymentToken == NATIVE) revert ERC20Only();
        sessionId = _open(
            NewSession(
                payer, host, modelId, paymentToken, amount, pricePerToken, maxDuration, proofInterval, proofTimeoutWindow
            )
        );
        emit SessionCreatedByDelegate(sessionId, payer, msg.sender, host, modelId, amount);
        IERC20(paymentToken).safeTransferFrom(payer, address(this), amount);
    }

    /// @notice Allow (or stop allowing) `delegate` to open sessions paid by the caller.
    function authorizeDelegate(address delegate, bool authorized) external {
        require(delegate != address(0) && delegate != msg.sender, "Invalid delegate");
        isAuthorizedDelegate[msg.sender][delegate] = authorized;
        emit DelegateAuthorized(msg.sender, delegate, authorized);
    }

    // ================================================================ proofs

    /// @notice The session's host records `tokensClaimed` more proven tokens.
    function submitProofOfWork(
        uint256 jobId,
        uint256 tokensClaimed,
        bytes32 proofHash,
        string calldata proofCID,
        string calldata deltaCID
    ) external whenNotPaused nonReentrant {
        SessionJob storage job = _activeSession(jobId);
        _checkProof(jobId, job, tokensClaimed);
        job.tokensUsed += tokensClaimed;
        job.lastProofTime = block.timestamp;
        job.lastProofHash = proofHash;
        job.lastProofCID = proofCID;
        job.proofs.push(ProofSubmission(proofHash, tokensClaimed, block.timestamp, true, deltaCID));
        emit ProofSubmitted(jobId, msg.sender, tokensClaimed, proofHash, proofCID, deltaCID);
        _markProofUsed(jobId, proofHash, tokensClaimed);
    }

    // ============================================================ settlement

    /// @notice End a session and settle the proven work. The depositor may do so at any time,
    ///         the host once the dispute window after the start has passed. Works while paused.
    function completeSessionJob(uint256 jobId, string calldata conversationCID) external nonReentrant {
        SessionJob storage job = _activeSession(jobId);
        require(msg.sender == job.depositor || msg.sender == job.host, "Only depositor or host can complete");
        if (msg.sender != job.depositor) {
            require(block.timestamp >= job.startTime + disputeWindow, "Must wait dispute window");
        }
        job.status = SessionStatus.Completed;
        job.conversationCID = conversationCID;
        // an early cancellation: the depositor ends the session before any proof
        uint256 billed = job.tokensUsed;
        if (billed == 0 && msg.sender == job.depositor) billed = minTokensFee;
        (uint256 hostPayment, uint256 refund) = _settle(jobId, job, billed);
        emit SessionCompleted(jobId, job.tokensUsed, hostPayment, refund);
        emit SessionCompletedBy(jobId, msg.sender, job.tokensUsed, hostPayment, refund);
    }

    /// @notice Anyone may settle a session whose maximum duration has passed or whose host has
    ///         not proven work within proofTimeoutWindow seconds of the last proof (or the start).
    function triggerSessionTimeout(uint256 jobId) external nonReentrant {
        SessionJob storage job = _activeSession(jobId);
        require(
            block.timestamp > job.startTime + job.maxDuration
                || block.timestamp > job.lastProofTime + job.proofTimeoutWindow,
            "Session not timed out"
        );
        job.status = SessionStatus.TimedOut;
        (uint256 hostPayment, uint256 refund) = _settle(jobId, job, job.tokensUsed);
        emit SessionTimedOut(jobId, hostPayment, refund);
    }

    // ============================================================== deposits

    function depositNative() external payable whenNotPaused nonReentrant {
        require(msg.value > 0, "Amount must be positive");
        userDepositsNative[msg.sender] += msg.value;
        emit DepositReceived(msg.sender, msg.value, NATIVE);
    }

    function depositToken(address token, uint256 amount) external whenNotPaused nonReentrant {
        require(acceptedTokens[token], "Token not accepted");
        require(amount > 0, "Amount must be positive");
        userDepositsToken[msg.sender][token] += amount;
        emit DepositReceived(msg.sender, amount, token);
        IERC20(token).safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Withdraw unlocked ETH deposit. Works while paused.
    function withdrawNative(uint256 amount) external nonReentrant {
        require(amount > 0, "Amount must be positive");
        require(userDepositsNative[msg.sender] >= amount, "Insufficient balance");
        userDepositsNative[msg.sender] -= amount;
        emit WithdrawalProcessed(msg.sender, amount, NATIVE);
        Address.sendValue(payable(msg.sender), amount);
    }

    /// @notice Withdraw unlocked ERC-20 deposit. Works while paused.
    function withdrawToken(address token, uint256 amount) external nonReentrant {
        require(token != NATIVE, "Use withdrawNative");
        require(amount > 0, "Amount must be positive");
        require(userDepositsToken[msg.sender][token] >= amount, "Insufficient balance");
        userDepositsToken[msg.sender][token] -= amount;
        emit WithdrawalProcessed(msg.sender, amount, token);
        IERC20(token).safeTransfer(msg.sender, amount);
    }

    // ============================================================== treasury

    function withdrawTreasuryNative() external onlyTreasury nonReentrant {
        require(_withdrawTreasury(NATIVE) > 0, "No native fees");
    }

    function withdrawTreasuryTokens(address token) external onlyTreasury nonReentrant {
        require(token != NATIVE, "Use withdrawTreasuryNative");
        require(_withdrawTreasury(token) > 0, "No token fees");
    }

    /// @notice Withdraw native fees and the fees of every listed token; empty ones are skipped.
    function withdrawAllTreasuryFees(address[] calldata tokens) external onlyTreasury nonReentrant {
        uint256 moved = _withdrawTreasury(NATIVE);
        for (uint256 i = 0; i < tokens.length; i++) {
            if (tokens[i] != NATIVE) moved += _withdrawTreasury(tokens[i]);
        }
        require(moved > 0, "No fees to withdraw");
    }

    // ================================================================= admin

    function setProofSystem(address _proofSystem) external onlyOwner {
        require(_proofSystem != address(0), "Invalid proof system");
        proofSystem = ProofSystem(_proofSystem);
        emit ProofSystemUpdated(_proofSystem);
    }

    /// @notice Set the USDC address and accept it with the USDC deposit bounds.
    function setUsdcAddress(address _usdc) external onlyOwner {
        require(_usdc != address(0), "Invalid USDC address");
        usdcAddress = _usdc;
        emit UsdcAddressUpdated(_usdc);
        _acceptToken(_usdc, USDC_MIN_DEPOSIT, USDC_MAX_DEPOSIT);
    }

    function addAcceptedToken(address token, uint256 minDeposit, uint256 maxDeposit) external onlyTreasuryOrOwner {
        require(token != NATIVE, "Invalid token");
        require(!acceptedTokens[token], "Token already accepted");
        _acceptToken(token, minDeposit, maxDeposit);
    }

    function updateTokenMinDeposit(address token, uint256 minDeposit) external onlyTreasuryOrOwner {
        require(acceptedTokens[token], "Token not accepted");
        require(minDeposit > 0 && minDeposit <= tokenMaxDeposits[token], "Invalid minimum deposit");
        emit TokenMinDepositUpdated(token, tokenMinDeposits[token], minDeposit);
        tokenMinDeposits[token] = minDeposit;
    }

    function updateTokenMaxDeposit(address token, uint256 maxDeposit) external onlyTreasuryOrOwner {
        require(acceptedTokens[token], "Token not accepted");
        require(maxDeposit >= tokenMinDeposits[token], "Invalid maximum deposit");
        emit TokenMaxDepositUpdated(token, tokenMaxDeposits[token], maxDeposit);
        tokenMaxDeposits[token] = maxDeposit;
    }

    function setTreasury(address _treasury) external onlyOwner {
        require(_treasury != address(0), "Invalid treasury");
        treasuryAddress = _treasury;
        emit TreasuryUpdated(_treasury);
    }

    /// @notice Set the early-cancellation fee in tokens (see `minTokensFee`).
    function setMinTokensFee(uint256 _fee) external onlyOwner {
        minTokensFee = _fee;
        emit MinTokensFeeUpdated(_fee);
    }

    /// @notice Record descriptive chain settings, once. Informational only: deposits use the
    ///         constants and the accepted-token list.
    function initializeChainConfig(ChainConfig calldata _config) external onlyOwner {
        require(!_chainConfigSet, "Chain config already set");
        require(bytes(_config.nativeTokenSymbol).length > 0, "Empty native token symbol");
        _chainConfigSet = true;
        chainConfig = _config;
        emit ChainConfigInitialized(
            _config.nativeWrapper, _config.stablecoin, _config.minDeposit, _config.nativeTokenSymbol
        );
    }

    function pause() external onlyTreasuryOrOwner {
        _pause();
        emit ContractPaused(msg.sender);
    }

    function unpause() external onlyTreasuryOrOwner {
        _unpause();
        emit ContractUnpaused(msg.sender);
    }

    // ================================================================= views

    function getProofSubmission(uint256 sessionId, uint256 proofIndex)
        external
        view
        returns (bytes32 proofHash, uint256 tokensClaimed, uint256 timestamp, bool verified, string memory deltaCID)
    {
        ProofSubmission[] storage list = sessionJobs[sessionId].proofs;
        require(proofIndex < list.length, "Proof index out of range");
        ProofSubmission storage p = list[proofIndex];
        return (p.proofHash, p.tokensClaimed, p.timestamp, p.verified, p.deltaCID);
    }

    function isDelegateAuthorized(address depositor, address delegate) external view returns (bool) {
        return isAuthorizedDelegate[depositor][delegate];
    }

    /// @notice Unlocked pre-funded deposit of `account` in `token` (address(0) = ETH).
    function getDepositBalance(address account, address token) external view returns (uint256) {
        return _depositOf(account, token);
    }

    function getDepositBalances(address account, address[] calldata tokens) external view returns (uint256[] memory) {
        uint256[] memory balances = new uint256[](tokens.length);
        for (uint256 i = 0; i < tokens.length; i++) {
            balances[i] = _depositOf(account, tokens[i]);
        }
        return balances;
    }

    /// @notice ETH locked in the account's active sessions (whatever path funded them).
    function getLockedBalanceNative(address account) external view returns (uint256 locked) {
        return _locked[account][NATIVE];
    }

    function getLockedBalanceToken(address account, address token) external view returns (uint256 locked) {
        return _locked[account][token];
    }

    /// @notice Unlocked deposit plus locked session deposits, in ETH.
    function getTotalBalanceNative(address account) external view returns (uint256) {
        return userDepositsNative[account] + _locked[account][NATIVE];
    }

    function getTotalBalanceToken(address account, address token) external view returns (uint256) {
        return _depositOf(account, token) + _locked[account][token];
    }

    // ============================================================== internal

    function _open(NewSession memory s) private returns (uint256 jobId) {
        _validateTerms(s);
        _validateHost(s);
        jobId = nextJobId++;
        SessionJob storage job = sessionJobs[jobId];
        job.id = jobId;
        job.depositor = s.depositor;
        job.host = s.host;
        job.paymentToken = s.token;
        job.deposit = s.deposit;
        job.pricePerToken = s.pricePerToken;
        job.maxDuration = s.maxDuration;
        job.startTime = block.timestamp;
        job.lastProofTime = block.timestamp;
        job.proofInterval = s.proofInterval;
        job.proofTimeoutWindow = s.proofTimeoutWindow;
        job.status = SessionStatus.Active;
        sessionModel[jobId] = s.modelId;
        userSessions[s.depositor].push(jobId);
        hostSessions[s.host].push(jobId);
        _locked[s.depositor][s.token] += s.deposit;
        emit SessionJobCreated(jobId, s.depositor, s.host, s.deposit);
        emit SessionJobCreatedForModel(jobId, s.depositor, s.host, s.modelId, s.deposit);
    }

    function _validateTerms(NewSession memory s) private view {
        require(s.host != address(0), "Invalid host");
        require(s.pricePerToken > 0, "Invalid price");
        require(s.maxDuration > 0 && s.maxDuration <= MAX_SESSION_DURATION, "Invalid max duration");
        require(
            s.proofTimeoutWindow >= MIN_PROOF_TIMEOUT && s.proofTimeoutWindow <= MAX_PROOF_TIMEOUT,
            "Invalid proof timeout window"
        );
        _checkDepositBounds(s.token, s.deposit);
        require(s.proofInterval >= MIN_PROVEN_TOKENS, "Proof interval below minimum");
        require(_maxTokens(s.deposit, s.pricePerToken) >= s.proofInterval, "Deposit too small for proof interval");
    }

    function _checkDepositBounds(address token, uint256 deposit) private view {
        uint256 minDeposit = MIN_DEPOSIT;
        uint256 maxDeposit = MAX_NATIVE_DEPOSIT;
        if (token != NATIVE) {
            require(acceptedTokens[token], "Token not accepted");
            minDeposit = tokenMinDeposits[token];
            maxDeposit = tokenMaxDeposits[token];
        }
        require(deposit >= minDeposit, "Deposit below minimum");
        require(deposit <= maxDeposit, "Deposit above maximum");
    }

    function _validateHost(NewSession memory s) private view {
        require(_modelRegistry().isModelApproved(s.modelId), "Model not approved");
        require(nodeRegistry.isActiveNode(s.host), "Host not active");
        require(nodeRegistry.nodeSupportsModel(s.host, s.modelId), "Host does not support model");
        require(
            s.pricePerToken >= nodeRegistry.getModelPricing(s.host, s.modelId, s.token), "Price below host minimum"
        );
    }

    /// @dev tokensClaimed <= seconds since the last proof (or start) * model rate limit * burst.
    ///      The limit comes from the ModelRegistry the NodeRegistry currently points at.
    function _checkRateLimit(uint256 jobId, uint256 lastProofTime, uint256 tokensClaimed) private view {
        uint256 limit = _modelRegistry().getModelRateLimit(sessionModel[jobId]);
        uint256 allowed = (block.timestamp - lastProofTime) * limit * RATE_LIMIT_BURST;
        require(tokensClaimed <= allowed, "Exceeds rate limit");
    }

    function _checkProof(uint256 jobId, SessionJob storage job, uint256 tokensClaimed) private view {
        require(msg.sender == job.host, "Only host can submit proof");
        require(tokensClaimed >= MIN_PROVEN_TOKENS, "Must claim minimum tokens");
        require(job.tokensUsed + tokensClaimed <= _maxTokens(job.deposit, job.pricePerToken), "Exceeds deposit");
        _checkRateLimit(jobId, job.lastProofTime, tokensClaimed);
        require(address(proofSystem) != address(0), "Proof system not set");
    }

    /// @dev The proof system refuses a proof hash that was used before, in any session.
    function _markProofUsed(uint256 jobId, bytes32 proofHash, uint256 tokensClaimed) private {
        bool fresh = proofSystem.markProofUsed(proofHash, msg.sender, tokensClaimed, sessionModel[jobId]);
        require(fresh, "Proof rejected");
    }

    /// @dev Pays the host for `billed` tokens (the proven ones, or the early-cancellation fee).
    function _settle(uint256 jobId, SessionJob storage job, uint256 billed)
        private
        returns (uint256 hostPayment, uint256 refund)
    {
        address token = job.paymentToken;
        address depositor = job.depositor;
        uint256 deposit = job.deposit;
        uint256 affordable = (deposit * PRICE_PRECISION) / job.pricePerToken; // maxTokens
        if (billed > affordable) billed = affordable; // a fee above the deposit (no overflow)
        hostPayment = (billed * job.pricePerToken) / PRICE_PRECISION;
        refund = deposit - hostPayment;
        uint256 fee = (hostPayment * feeBasisPoints) / BASIS_POINTS;

        job.withdrawnByHost = hostPayment;
        job.refundedToUser = refund;
        _locked[depositor][token] -= deposit;
        if (token == NATIVE) accumulatedTreasuryNative += fee;
        else accumulatedTreasuryTokens[token] += fee;
        bool toDeposit = _fundedFromDeposit[jobId];
        if (toDeposit && refund > 0) _creditRefund(jobId, depositor, refund, token);

        _payHost(job.host, hostPayment - fee, token);
        if (!toDeposit && refund > 0) _sendRefund(jobId, depositor, refund, token);
    }

    /// @dev Net host payment: funds to HostEarnings, then credited to the host there.
    function _payHost(address host, uint256 net, address token) private {
        if (net == 0) return;
        if (token == NATIVE) Address.sendValue(payable(address(hostEarnings)), net);
        else IERC20(token).safeTransfer(address(hostEarnings), net);
        hostEarnings.creditEarnings(host, net, token);
        emit PaymentSent(host, net);
    }

    /// @dev Refund straight to the depositor; if the transfer fails (a contract that rejects
    ///      ETH, a blocked token account) the refund is credited to its deposit balance instead,
    ///      so settlement can never be blocked by the depositor.
    function _sendRefund(uint256 jobId, address depositor, uint256 refund, address token) private {
        bool sent = token == NATIVE
            ? LowLevelCall.callNoReturn(depositor, refund, "")
            : IERC20(token).trySafeTransfer(depositor, refund);
        if (sent) emit PaymentSent(depositor, refund);
        else _creditRefund(jobId, depositor, refund, token);
    }

    function _creditRefund(uint256 jobId, address depositor, uint256 refund, address token) private {
        _setDeposit(depositor, token, _depositOf(depositor, token) + refund);
        emit RefundCreditedToDeposit(jobId, depositor, refund, token);
    }

    function _withdrawTreasury(address token) private returns (uint256 amount) {
        if (token == NATIVE) {
            amount = accumulatedTreasuryNative;
            if (amount == 0) return 0;
            accumulatedTreasuryNative = 0;
            emit TreasuryWithdrawal(NATIVE, amount);
            Address.sendValue(payable(treasuryAddress), amount);
        } else {
            amount = accumulatedTreasuryTokens[token];
            if (amount == 0) return 0;
            accumulatedTreasuryTokens[token] = 0;
            emit TreasuryWithdrawal(token, amount);
            IERC20(token).safeTransfer(treasuryAddress, amount);
        }
    }

    function _acceptToken(address token, uint256 minDeposit, uint256 maxDeposit) private {
        require(minDeposit > 0, "Invalid minimum deposit");
        require(maxDeposit >= minDeposit, "Invalid maximum deposit");
        acceptedTokens[token] = true;
        tokenMinDeposits[token] = minDeposit;
        tokenMaxDeposits[token] = maxDeposit;
        emit TokenAccepted(token, minDeposit, maxDeposit);
    }

    function _activeSession(uint256 jobId) private view returns (SessionJob storage job) {
        job = sessionJobs[jobId];
        require(job.id != 0, "Session not found");
        require(job.status == SessionStatus.Active, "Session not active");
    }

    function _depositOf(address account, address token) private view returns (uint256) {
        return token == NATIVE ? userDepositsNative[account] : userDepositsToken[account][token];
    }

    function _setDeposit(address account, address token, uint256 amount) private {
        if (token == NATIVE) userDepositsNative[account] = amount;
        else userDepositsToken[account][token] = amount;
    }

    function _maxTokens(uint256 deposit, uint256 pricePerToken) private pure returns (uint256) {
        return (deposit * PRICE_PRECISION) / pricePerToken;
    }

    function _modelRegistry() private view returns (ModelRegistry) {
        return nodeRegistry.modelRegistry();
    }
}
