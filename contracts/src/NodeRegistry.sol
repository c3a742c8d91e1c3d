// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ModelRegistry} from "./ModelRegistry.sol";

/// @title NodeRegistry
/// @notice Compute hosts register here with a FAB stake, the models they serve, their API URL,
///         a metadata JSON (which carries the host's public key) and their minimum prices.
///         Prices use JobMarketplace units: price per token times PRICE_PRECISION, in the
///         payment token's smallest unit.
/// @dev Plain (non-proxy) deployment. Per-model and per-token price overrides are kept per
///      registration: unregistering (or being removed) discards them, so a host that registers
///      again starts from its new defaults.
contract NodeRegistry is Ownable, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    struct Node {
        address operator;
        uint256 stakedAmount;
        bool active;
        string metadata;
        string apiUrl;
        bytes32[] supportedModels;
        uint256 minPricePerTokenNative;
        uint256 minPricePerTokenStable;
    }

    uint256 public constant MIN_STAKE = 1000 ether; // 1000 FAB (18 decimals)
    uint256 public constant PRICE_PRECISION = 1000;
    uint256 public constant MIN_PRICE_PER_TOKEN_NATIVE = 227_273;
    uint256 public constant MAX_PRICE_PER_TOKEN_NATIVE = 22_727_272_727_273_000;
    uint256 public constant MIN_PRICE_PER_TOKEN_STABLE = 1;
    uint256 public constant MAX_PRICE_PER_TOKEN_STABLE = 100_000_000;
    uint256 public constant MAX_SLASH_PERCENTAGE = 50;
    uint256 public constant MIN_STAKE_AFTER_SLASH = 100 ether; // 100 FAB
    uint256 public constant SLASH_COOLDOWN = 24 hours;

    IERC20 public immutable fabToken;
    ModelRegistry public modelRegistry;

    mapping(address => Node) public nodes;
    mapping(bytes32 => address[]) public modelToNodes;
    address[] public activeNodesList;
    /// @notice Position of an operator in activeNodesList (meaningful only while it is listed).
    mapping(address => uint256) public activeNodesIndex;

    address public slashingAuthority;
    address public treasury;
    mapping(address => uint256) public lastSlashTime;

    // position + 1 of an operator in modelToNodes[modelId]; 0 = not serving the model
    mapping(bytes32 => mapping(address => uint256)) private _modelNodePos;
    // pricing overrides, keyed by the operator's registration epoch
    mapping(address => uint256) private _epoch;
    mapping(address => mapping(uint256 => mapping(bytes32 => mapping(address => uint256)))) private _modelPrice;
    mapping(address => mapping(uint256 => mapping(address => uint256))) private _tokenPrice;
    mapping(address => mapping(uint256 => mapping(bytes32 => uint256))) private _modelStablePrice;

    event NodeRegistered(address indexed operator, uint256 stakedAmount, string metadata, bytes32[] models);
    event NodeUnregistered(address indexed operator, uint256 returnedAmount);
    event StakeAdded(address indexed operator, uint256 amount, uint256 totalStake);
    event MetadataUpdated(address indexed operator, string newMetadata);
    event ApiUrlUpdated(address indexed operator, string newApiUrl);
    event ModelsUpdated(address indexed operator, bytes32[] newModels);
    event PricingUpdated(address indexed operator, uint256 minPricePerTokenNative, uint256 minPricePerTokenStable);
    event TokenPricingUpdated(address indexed operator, address indexed token, uint256 price);
    event ModelTokenPricingUpdated(
        address indexed operator, bytes32 indexed modelId, address indexed token, uint256 price
    );
    event ModelPricingUpdated(address indexed operator, bytes32 indexed modelId, uint256 nativePrice, uint256 stablePrice);
    event ModelRegistryUpdated(address indexed newRegistry);
    event SlashExecuted(
        address indexed host,
        uint256 amount,
        uint256 remainingStake,
        string evidenceCID,
        string reason,
        address indexed executor,
        uint256 timestamp
    );
    event HostAutoUnregistered(address indexed host, uint256 slashedAmount, uint256 returnedAmount, string reason);
    event SlashingAuthorityUpdated(address indexed previousAuthority, address indexed newAuthority);
    event TreasuryUpdated(address indexed newTreasury);
    event CorruptNodeRepaired(address indexed operator, uint256 stakeReturned);

    modifier onlyRegistered() {
        require(nodes[msg.sender].operator != address(0), "Not registered");
        _;
    }

    constructor(address _fabToken, address _modelRegistry) Ownable(msg.sender) {
        require(_fabToken != address(0), "Invalid FAB token");
        require(_modelRegistry != address(0), "Invalid model registry");
        fabToken = IERC20(_fabToken);
        modelRegistry = ModelRegistry(_modelRegistry);
    }

    // ---------------------------------------------------------- registration

    /// @notice Register the caller as a host; pulls MIN_STAKE FAB (approve it first).
    function registerNode(
        string calldata metadata,
        string calldata apiUrl,
        bytes32[] calldata modelIds,
        uint256 minPricePerTokenNative,
        uint256 minPricePerTokenStable
    ) external nonReentrant {
        require(nodes[msg.sender].operator == address(0), "Already registered");
        require(bytes(metadata).length > 0, "Empty metadata");
        require(bytes(apiUrl).length > 0, "Empty API URL");
        _validateModels(modelIds);
        _checkNativePrice(minPricePerTokenNative);
        _checkStablePrice(minPricePerTokenStable);

        Node storage n = nodes[msg.sender];
        n.operator = msg.sender;
        n.stakedAmount = MIN_STAKE;
        n.active = true;
        n.metadata = metadata;
        n.apiUrl = apiUrl;
        n.supportedModels = modelIds;
        n.minPricePerTokenNative = minPricePerTokenNative;
        n.minPricePerTokenStable = minPricePerTokenStable;
        _linkModels(msg.sender);
        activeNodesIndex[msg.sender] = activeNodesList.length;
        activeNodesList.push(msg.sender);

        emit NodeRegistered(msg.sender, MIN_STAKE, metadata, modelIds);
        fabToken.safeTransferFrom(msg.sender, address(this), MIN_STAKE);
    }

    /// @notice Leave the market and get the whole stake back.
    function unregisterNode() external onlyRegistered nonReentrant {
        uint256 amount = nodes[msg.sender].stakedAmount;
        _removeNode(msg.sender);
        emit NodeUnregistered(msg.sender, amount);
        if (amount > 0) fabToken.safeTransfer(msg.sender, amount);
    }

    /// @notice Add `amount` FAB to the caller's stake.
    function stake(uint256 amount) external onlyRegistered nonReentrant {
        require(amount > 0, "Amount must be positive");
        uint256 total = nodes[msg.sender].stakedAmount + amount;
        nodes[msg.sender].stakedAmount = total;
        emit StakeAdded(msg.sender, amount, total);
        fabToken.safeTransferFrom(msg.sender, address(this), amount);
    }

    function updateMetadata(string calldata newMetadata) external onlyRegistered {
        require(bytes(newMetadata).length > 0, "Empty metadata");
        nodes[msg.sender].metadata = newMetadata;
        emit MetadataUpdated(msg.sender, newMetadata);
    }

    function updateApiUrl(string calldata newApiUrl) external onlyRegistered {
        require(bytes(newApiUrl).length > 0, "Empty API URL");
        nodes[msg.sender].apiUrl = newApiUrl;
        emit ApiUrlUpdated(msg.sender, newApiUrl);
    }

    /// @notice Replace the list of served models. Price overrides of a dropped model are kept
    ///         and apply again if the model is added back.
    function updateSupportedModels(bytes32[] calldata newModelIds) external onlyRegistered {
        _validateModels(newModelIds);
        _unlinkModels(msg.sender);
        nodes[msg.sender].supportedModels = newModelIds;
        _linkModels(msg.sender);
        emit ModelsUpdated(msg.sender, newModelIds);
    }

    // --------------------------------------------------------------- pricing

    /// @notice Change the default minimum native price.
    function updatePricingNative(uint256 newMinPrice) external onlyRegistered {
        _checkNativePrice(newMinPrice);
        Node storage n = nodes[msg.sender];
        n.minPricePerTokenNative = newMinPrice;
        emit PricingUpdated(msg.sender, newMinPrice, n.minPricePerTokenStable);
    }

    /// @notice Change the default minimum price for ERC-20 (stablecoin) payments.
    function updatePricingStable(uint256 newMinPrice) external onlyRegistered {
        _checkStablePrice(newMinPrice);
        Node storage n = nodes[msg.sender];
        n.minPricePerTokenStable = newMinPrice;
        emit PricingUpdated(msg.sender, n.minPricePerTokenNative, newMinPrice);
    }

    /// @notice Set a default minimum price for one ERC-20 token (0 clears it back to the stable default).
    function setTokenPricing(address token, uint256 price) external onlyRegistered {
        require(token != address(0), "Use updatePricingNative");
        if (price != 0) _checkStablePrice(price);
        _tokenPrice[msg.sender][_epoch[msg.sender]][token] = price;
        emit TokenPricingUpdated(msg.sender, token, price);
    }

    /// @notice Set the minimum price for one served model paid in `token` (address(0) = native).
    function setModelTokenPricing(bytes32 modelId, address token, uint256 price) external onlyRegistered {
        require(nodeSupportsModel(msg.sender, modelId), "Model not supported");
        if (token == address(0)) _checkNativePrice(price);
        else _checkStablePrice(price);
        _modelPrice[msg.sender][_epoch[msg.sender]][modelId][token] = price;
        emit ModelTokenPricingUpdated(msg.sender, modelId, token, price);
    }

    /// @notice Remove a per-model price override; the token default applies again.
    function clearModelTokenPricing(bytes32 modelId, address token) external onlyRegistered {
        _modelPrice[msg.sender][_epoch[msg.sender]][modelId][token] = 0;
        emit ModelTokenPricingUpdated(msg.sender, modelId, token, 0);
    }

    /// @notice Per-model minimum prices in one call: `nativePrice` is the native override (as
    ///         setModelTokenPricing with token 0), `stablePrice` applies to every ERC-20 that has
    ///         no token-specific override for this model. 0 clears the respective override.
    function setModelPricing(bytes32 modelId, uint256 nativePrice, uint256 stablePrice) external onlyRegistered {
        require(nodeSupportsModel(msg.sender, modelId), "Model not supported");
        if (nativePrice != 0) _checkNativePrice(nativePrice);
        if (stablePrice != 0) _checkStablePrice(stablePrice);
        uint256 epoch = _epoch[msg.sender];
        _modelPrice[msg.sender][epoch][modelId][address(0)] = nativePrice;
        _modelStablePrice[msg.sender][epoch][modelId] = stablePrice;
        emit ModelPricingUpdated(msg.sender, modelId, nativePrice, stablePrice);
    }

    // -------------------------------------------------------------- slashing

    /// @notice One-time set-up: the owner becomes slashing authority, `_treasury` receives slashed FAB.
    function initializeSlashing(address _treasury) external onlyOwner {
        require(slashingAuthority == address(0) && treasury == address(0), "Slashing already initialized");
        require(_treasury != address(0), "Invalid treasury");
        slashingAuthority = owner();
        treasury = _treasury;
        emit SlashingAuthorityUpdated(address(0), owner());
        emit TreasuryUpdated(_treasury);
    }

    function setSlashingAuthority(address newAuthority) external onlyOwner {
        require(newAuthority != address(0), "Invalid authority");
        emit SlashingAuthorityUpdated(slashingAuthority, newAuthority);
        slashingAuthority = newAuthority;
    }

    function setTreasury(address newTreasury) external onlyOwner {
        require(newTreasury != address(0), "Invalid treasury");
        treasury = newTreasury;
        emit TreasuryUpdated(newTreasury);
    }

    /// @notice Take up to MAX_SLASH_PERCENTAGE of a host's stake to the treasury, at most once per
    ///         SLASH_COOLDOWN. A host left with less than MIN_STAKE_AFTER_SLASH is removed and
    ///         gets the rest of its stake back.
    function slashStake(address host, uint256 amount, string calldata evidenceCID, string calldata reason)
        external
        nonReentrant
    {
        require(msg.sender == slashingAuthority && msg.sender != address(0), "Not slashing authority");
        require(treasury != address(0), "Treasury not set");
        Node storage n = nodes[host];
        require(n.operator != address(0), "Host not registered");
        require(amount > 0, "Amount must be positive");
        require(amount <= (n.stakedAmount * MAX_SLASH_PERCENTAGE) / 100, "Exceeds max slash");
        require(bytes(evidenceCID).length > 0, "Evidence required");
        require(bytes(reason).length > 0, "Reason required");
        uint256 last = lastSlashTime[host];
        require(last == 0 || block.timestamp >= last + SLASH_COOLDOWN, "Slash cooldown active");

        uint256 remaining = n.stakedAmount - amount;
        n.stakedAmount = remaining;
        lastSlashTime[host] = block.timestamp;
        emit SlashExecuted(host, amount, remaining, evidenceCID, reason, msg.sender, block.timestamp);

        if (remaining < MIN_STAKE_AFTER_SLASH) {
            _removeNode(host);
            emit HostAutoUnregistered(host, amount, remaining, reason);
            if (remaining > 0) fabToken.safeTransfer(host, remaining);
        }
        fabToken.safeTransfer(treasury, amount);
    }

    // ----------------------------------------------------------------- owner

    function updateModelRegistry(address newRegistry) external onlyOwner {
        require(newRegistry != address(0), "Invalid model registry");
        modelRegistry = ModelRegistry(newRegistry);
        emit ModelRegistryUpdated(newRegistry);
    }

    /// @notice Take a node off the market whatever state its record is in (for example a record
    ///         that is listed but half-deleted), return the stake it holds and clear every index.
    function repairCorruptNode(address nodeAddress) external onlyOwner nonReentrant {
        Node storage n = nodes[nodeAddress];
        require(
            n.operator != address(0) || n.stakedAmount > 0 || _isListed(nodeAddress), "Node not found"
        );
        uint256 stakeReturned = n.stakedAmount;
        _removeNode(nodeAddress);
        emit CorruptNodeRepaired(nodeAddress, stakeReturned);
        if (stakeReturned > 0) fabToken.safeTransfer(nodeAddress, stakeReturned);
    }

    // ----------------------------------------------------------------- views

    function getNodeFullInfo(address operator)
        external
        view
        returns (address, uint256, bool, string memory, string memory, bytes32[] memory, uint256, uint256)
    {
        Node storage n = nodes[operator];
        return (
            n.operator,
            n.stakedAmount,
            n.active,
            n.metadata,
            n.apiUrl,
            n.supportedModels,
            n.minPricePerTokenNative,
            n.minPricePerTokenStable
        );
    }

    function getNodeModels(address nodeAddress) external view returns (bytes32[] memory) {
        return nodes[nodeAddress].supportedModels;
    }

    function nodeSupportsModel(address nodeAddress, bytes32 modelId) public view returns (bool) {
        return _modelNodePos[modelId][nodeAddress] != 0;
    }

    function isActiveNode(address operator) external view returns (bool) {
        return nodes[operator].active;
    }

    function getNodeApiUrl(address operator) external view returns (string memory) {
        return nodes[operator].apiUrl;
    }

    function getAllActiveNodes() external view returns (address[] memory) {
        return activeNodesList;
    }

    function getNodesForModel(bytes32 modelId) external view returns (address[] memory) {
        return modelToNodes[modelId];
    }

    /// @notice Default minimum price of `operator` for `token` (address(0) = native).
    function getNodePricing(address operator, address token) public view returns (uint256) {
        Node storage n = nodes[operator];
        if (token == address(0)) return n.minPricePerTokenNative;
        uint256 custom = customTokenPricing(operator, token);
        return custom != 0 ? custom : n.minPricePerTokenStable;
    }

    /// @notice Minimum price for a session on `modelId` paid in `token`, the first that is set of:
    ///         the per-model price for that token (setModelTokenPricing), for an ERC-20 the
    ///         per-model stable price (setModelPricing), the operator's default for the token.
    function getModelPricing(address operator, bytes32 modelId, address token) public view returns (uint256) {
        uint256 price = modelTokenPricing(operator, modelId, token);
        if (price == 0 && token != address(0)) price = modelPricingStable(operator, modelId);
        return price != 0 ? price : getNodePricing(operator, token);
    }

    /// @notice Effective minimum price in `token` for every model the operator serves.
    function getHostModelPrices(address operator, address token)
        external
        view
        returns (bytes32[] memory modelIds, uint256[] memory prices)
    {
        modelIds = nodes[operator].supportedModels;
        prices = new uint256[](modelIds.length);
        for (uint256 i = 0; i < modelIds.length; i++) {
            prices[i] = getModelPricing(operator, modelIds[i], token);
        }
    }

    /// @notice Per-model price override (0 = none).
    function modelTokenPricing(address operator, bytes32 modelId, address token) public view returns (uint256) {
        return _modelPrice[operator][_epoch[operator]][modelId][token];
    }

    /// @notice Per-token default set with setTokenPricing (0 = none).
    function customTokenPricing(address operator, address token) public view returns (uint256) {
        return _tokenPrice[operator][_epoch[operator]][token];
    }

    /// @notice Per-model native override (0 = none); same as modelTokenPricing(.., address(0)).
    function modelPricingNative(address operator, bytes32 modelId) external view returns (uint256) {
        return modelTokenPricing(operator, modelId, address(0));
    }

    /// @notice Per-model price for any ERC-20 without a token-specific override (0 = none).
    function modelPricingStable(address operator, bytes32 modelId) public view returns (uint256) {
        return _modelStablePrice[operator][_epoch[operator]][modelId];
    }

    // -------------------------------------------------------------- internal

    function _validateModels(bytes32[] calldata modelIds) private view {
        require(modelIds.length > 0, "No models");
        for (uint256 i = 0; i < modelIds.length; i++) {
            require(modelRegistry.isModelApproved(modelIds[i]), "Model not approved");
            for (uint256 j = 0; j < i; j++) {
                require(modelIds[j] != modelIds[i], "Duplicate model");
            }
        }
    }

    function _checkNativePrice(uint256 price) private pure {
        require(
            price >= MIN_PRICE_PER_TOKEN_NATIVE && price <= MAX_PRICE_PER_TOKEN_NATIVE, "Native price out of range"
        );
    }

    function _checkStablePrice(uint256 price) private pure {
        require(
            price >= MIN_PRICE_PER_TOKEN_STABLE && price <= MAX_PRICE_PER_TOKEN_STABLE, "Stable price out of range"
        );
    }

    function _linkModels(address operator) private {
        bytes32[] storage ids = nodes[operator].supportedModels;
        for (uint256 i = 0; i < ids.length; i++) {
            address[] storage list = modelToNodes[ids[i]];
            list.push(operator);
            _modelNodePos[ids[i]][operator] = list.length;
        }
    }

    function _unlinkModels(address operator) private {
        bytes32[] storage ids = nodes[operator].supportedModels;
        for (uint256 i = 0; i < ids.length; i++) {
            _unlinkModel(operator, ids[i]);
        }
    }

    function _unlinkModel(address operator, bytes32 modelId) private {
        uint256 pos = _modelNodePos[modelId][operator];
        if (pos == 0) return;
        address[] storage list = modelToNodes[modelId];
        address last = list[list.length - 1];
        list[pos - 1] = last;
        _modelNodePos[modelId][last] = pos;
        list.pop();
        delete _modelNodePos[modelId][operator];
    }

    function _isListed(address operator) private view returns (bool) {
        uint256 idx = activeNodesIndex[operator];
        return idx < activeNodesList.length && activeNodesList[idx] == operator;
    }

    function _unlist(address operator) private {
        if (!_isListed(operator)) return;
        uint256 idx = activeNodesIndex[operator];
        address last = activeNodesList[activeNodesList.length - 1];
        activeNodesList[idx] = last;
        activeNodesIndex[last] = idx;
        activeNodesList.pop();
        delete activeNodesIndex[operator];
    }

    /// @dev Clears every trace of a node: model lists, active list, record, price overrides.
    function _removeNode(address operator) private {
        _unlinkModels(operator);
        _unlist(operator);
        delete nodes[operator];
        _epoch[operator] += 1;
    }
}
