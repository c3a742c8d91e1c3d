// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title TestUSDC
/// @notice A 6-decimal stand-in for USDC on local and test chains. Only the deployer can mint.
contract TestUSDC is ERC20, Ownable {
    uint8 private _decimals = 6; // storage, so decimals() is `view` like the upstream ERC20 ABI

    constructor() ERC20("USD Coin (test)", "USDC") Ownable(msg.sender) {}

    function decimals() public view override returns (uint8) {
        return _decimals;
    }

    /// @notice Create `amount` base units (1 USDC = 1e6) for `to`.
    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }
}

/// @title FABToken
/// @notice An 18-decimal stand-in for the FAB stake token on local and test chains.
contract FABToken is ERC20, Ownable {
    constructor() ERC20("Fabstir Token (test)", "FAB") Ownable(msg.sender) {}

    /// @notice Create `amount` base units (1 FAB = 1e18) for `to`.
    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }
}
