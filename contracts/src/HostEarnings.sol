// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";

/// @title HostEarnings
/// @notice Holds what hosts have earned until they withdraw it. JobMarketplace (an authorised
///         caller) first sends the funds here and then credits them to the host; hosts pull
///         their balance with withdraw / withdrawAll / withdrawMultiple.
/// @dev token == address(0) stands for the chain's native currency (ETH). A credit is refused
///      unless this contract actually holds enough of the token to back every host balance.
contract HostEarnings is Ownable, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    address private constant NATIVE = address(0);

    mapping(address => bool) public authorizedCallers;
    /// @notice Per token: everything ever credited to hosts.
    mapping(address => uint256) public totalAccumulated;
    /// @notice Per token: everything hosts have withdrawn.
    mapping(address => uint256) public totalWithdrawn;
    mapping(address => mapping(address => uint256)) private _balances;

    event CallerAuthorized(address indexed caller, bool authorized);
    event EarningsCredited(address indexed host, address indexed token, uint256 amount, uint256 newBalance);
    event EarningsWithdrawn(address indexed host, address indexed token, uint256 amount, uint256 remainingBalance);
    event TokensRescued(address indexed token, address indexed to, uint256 amount);

    modifier onlyAuthorized() {
        require(authorizedCallers[msg.sender], "Caller not authorized");
        _;
    }

    constructor() Ownable(msg.sender) {}

    /// @notice Native currency is accepted only from authorised callers (the marketplace).
    receive() external payable onlyAuthorized {}

    function setAuthorizedCaller(address caller, bool authorized) external onlyOwner {
        require(caller != address(0), "Invalid caller");
        authorizedCallers[caller] = authorized;
        emit CallerAuthorized(caller, authorized);
    }

    /// @notice Credit `amount` of `token` to `host`. The funds must already be held here.
    function creditEarnings(address host, uint256 amount, address token) external onlyAuthorized {
        require(host != address(0), "Invalid host");
        require(amount > 0, "Amount must be positive");
        uint256 newBalance = _balances[host][token] + amount;
        _balances[host][token] = newBalance;
        totalAccumulated[token] += amount;
        require(_held(token) >= _outstanding(token), "Credit not backed by funds");
        emit EarningsCredited(host, token, amount, newBalance);
    }

    function withdraw(uint256 amount, address token) external nonReentrant {
        require(amount > 0, "Amount must be positive");
        require(_balances[msg.sender][token] >= amount, "Insufficient earnings");
        _withdraw(msg.sender, amount, token);
    }

    function withdrawAll(address token) external nonReentrant {
        uint256 amount = _balances[msg.sender][token];
        require(amount > 0, "No earnings to withdraw");
        _withdraw(msg.sender, amount, token);
    }

    /// @notice Withdraw the whole balance of every listed token; tokens with no balance are skipped.
    function withdrawMultiple(address[] calldata tokens) external nonReentrant {
        bool any;
        for (uint256 i = 0; i < tokens.length; i++) {
            uint256 amount = _balances[msg.sender][tokens[i]];
            if (amount > 0) {
                any = true;
                _withdraw(msg.sender, amount, tokens[i]);
            }
        }
        require(any, "No earnings to withdraw");
    }

    /// @notice Owner recovery of funds sent here by mistake: only the excess above what hosts are
    ///         owed can leave, and it goes to the owner.
    function rescueTokens(address token, uint256 amount) external onlyOwner nonReentrant {
        require(amount > 0, "Amount must be positive");
        uint256 held = _held(token);
        uint256 owed = _outstanding(token);
        require(held > owed && amount <= held - owed, "Amount exceeds excess");
        emit TokensRescued(token, owner(), amount);
        _send(payable(owner()), amount, token);
    }

    // ----------------------------------------------------------------- views

    function getBalance(address host, address token) external view returns (uint256) {
        return _balances[host][token];
    }

    function getBalances(address host, address[] calldata tokens) external view returns (uint256[] memory balances) {
        balances = new uint256[](tokens.length);
        for (uint256 i = 0; i < tokens.length; i++) {
            balances[i] = _balances[host][tokens[i]];
        }
    }

    function getTokenStats(address token)
        external
        view
        returns (uint256 accumulated, uint256 withdrawn, uint256 outstanding)
    {
        accumulated = totalAccumulated[token];
        withdrawn = totalWithdrawn[token];
        outstanding = accumulated - withdrawn;
    }

    // -------------------------------------------------------------- internal

    function _withdraw(address host, uint256 amount, address token) private {
        uint256 remaining = _balances[host][token] - amount;
        _balances[host][token] = remaining;
        totalWithdrawn[token] += amount;
        emit EarningsWithdrawn(host, token, amount, remaining);
        _send(payable(host), amount, token);
    }

    function _send(address payable to, uint256 amount, address token) private {
        if (token == NATIVE) {
            Address.sendValue(to, amount);
        } else {
            IERC20(token).safeTransfer(to, amount);
        }
    }

    function _held(address token) private view returns (uint256) {
        return token == NATIVE ? address(this).balance : IERC20(token).balanceOf(address(this));
    }

    function _outstanding(address token) private view returns (uint256) {
        return totalAccumulated[token] - totalWithdrawn[token];
    }
}
