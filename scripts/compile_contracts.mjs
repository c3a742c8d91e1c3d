#!/usr/bin/env node
// Compile contracts/src and contracts/test with the pinned solc-js (node_modules/solc) and write
// one artifact per contract: contracts/abi/<Name>.json, test helpers in contracts/abi/test/,
// each {"abi", "bytecode", "contractName"} with sorted keys, 2-space indent, trailing newline.
//
//   node scripts/compile_contracts.mjs             compile and write the artifacts
//   node scripts/compile_contracts.mjs --check     compile in memory; exit 1 naming every
//                                                  artifact that is missing, stale or unexpected
//   --out <dir>      artifact root instead of contracts/abi (for --check too)
//   --no-cache       ignore and do not update the compile cache
//
// Two compilations run in parallel worker threads: JobMarketplace needs the IR pipeline (its
// sessionJobs getter returns 18 values, too many for the legacy code generator's stack), the
// other contracts use the faster legacy pipeline. A compiler output is cached under
// node_modules/.cache/fabstir-contracts, keyed by the exact compiler input and checked against
// the hashes of every imported file, so a cache hit is exactly what solc would produce again.
import { createHash } from "node:crypto";
import { createRequire } from "node:module";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";

const require = createRequire(import.meta.url);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const SOLC_DIR = path.join(ROOT, "node_modules", "solc");
const CACHE_DIR = path.join(ROOT, "node_modules", ".cache", "fabstir-contracts");

// Contract name -> artifact sub-directory ("" = contracts/abi, "test" = contracts/abi/test).
const ARTIFACTS = {
  TestUSDC: "",
  FABToken: "",
  ModelRegistry: "",
  NodeRegistry: "",
  ProofSystem: "",
  HostEarnings: "",
  JobMarketplace: "",
  ReentrantDepositor: "test",
  JanuaryMarketplace: "test",
};
const SOURCE_DIRS = ["contracts/src", "contracts/test"];
const VIA_IR = new Set(["contracts/src/JobMarketplace.sol"]);

// The CBOR metadata hash is left out of the bytecode, so a comment-only edit does not change
// the artifacts (the ABI and the code are what the artifacts promise).
const BASE_SETTINGS = {
  evmVersion: "cancun",
  optimizer: { enabled: true, runs: 200 },
  metadata: { bytecodeHash: "none" },
};

// OpenZeppelin's transient reentrancy guard always triggers this warning; it is safe by design.
const IGNORED_WARNING = "Transient storage as defined by EIP-1153";

const sha256 = (text) => createHash("sha256").update(text).digest("hex");

function parseArgs(argv) {
  const args = { check: false, cache: true, out: path.join(ROOT, "contracts", "abi") };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--check") args.check = true;
    else if (argv[i] === "--no-cache") args.cache = false;
    else if (argv[i] === "--out" && i + 1 < argv.length) args.out = path.resolve(argv[++i]);
    else {
      console.error(`unknown argument: ${argv[i]}`);
      process.exit(2);
    }
  }
  return args;
}

function readSources() {
  const sources = {};
  for (const dir of SOURCE_DIRS) {
    const abs = path.join(ROOT, dir);
    if (!existsSync(abs)) continue;
    for (const file of readdirSync(abs).sort()) {
      if (file.endsWith(".sol")) {
        sources[`${dir}/${file}`] = { content: readFileSync(path.join(abs, file), "utf8") };
      }
    }
  }
  return sources;
}

function importPath(name) {
  return name.startsWith("@") ? path.join(ROOT, "node_modules", name) : path.join(ROOT, name);
}

// Only the owned files get bytecode generated; their imports are only parsed and type-checked.
function makeInput(sources, viaIR) {
  const outputSelection = {};
  for (const file of Object.keys(sources)) outputSelection[file] = { "*": ["abi", "evm.bytecode.object"] };
  return { language: "Solidity", sources, settings: { ...BASE_SETTINGS, viaIR, outputSelection } };
}

// ---------------------------------------------------------------------------------- worker

function workerMain() {
  const solc = require(SOLC_DIR);
  const imports = {};
  const findImports = (name) => {
    const file = importPath(name);
    if (!existsSync(file)) return { error: `file not found: ${name}` };
    const contents = readFileSync(file, "utf8");
    imports[name] = sha256(contents);
    return { contents };
  };
  const output = solc.compile(workerData, { import: findImports });
  parentPort.postMessage(JSON.stringify({ output: JSON.parse(output), imports }));
}

// ------------------------------------------------------------------------------------ main

function compileInWorker(inputText) {
  return new Promise((resolve, reject) => {
    const worker = new Worker(fileURLToPath(import.meta.url), { workerData: inputText });
    worker.once("message", (text) => resolve(JSON.parse(text)));
    worker.once("error", reject);
    worker.once("exit", (code) => {
      if (code !== 0) reject(new Error(`compiler worker exited with code ${code}`));
    });
  });
}

function cacheFile(inputText) {
  const { version } = JSON.parse(readFileSync(path.join(SOLC_DIR, "package.json"), "utf8"));
  return path.join(CACHE_DIR, `${sha256(`solc ${version}\n${inputText}`)}.json`);
}

function readCache(file) {
  if (!existsSync(file)) return null;
  try {
    const entry = JSON.parse(readFileSync(file, "utf8"));
    for (const [name, digest] of Object.entries(entry.imports)) {
      const abs = importPath(name);
      if (!existsSync(abs) || sha256(readFileSync(abs, "utf8")) !== digest) return null;
    }
    return entry;
  } catch {
    return null;
  }
}

function writeCache(file, entry) {
  try {
    mkdirSync(CACHE_DIR, { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(entry));
    renameSync(tmp, file);
  } catch {
    // a cache that cannot be written is only slower
  }
}

async function compilePass(sources, viaIR, useCache) {
  const inputText = JSON.stringify(makeInput(sources, viaIR));
  const file = cacheFile(inputText);
  let entry = useCache ? readCache(file) : null;
  if (!entry) {
    entry = await compileInWorker(inputText);
    const failed = (entry.output.errors || []).some((e) => e.severity === "error");
    if (useCache && !failed) writeCache(file, entry);
  }
  return entry.output;
}

function contractsOf(output) {
  const diagnostics = output.errors || [];
  for (const e of diagnostics) {
    if (e.severity !== "error" && !e.message.includes(IGNORED_WARNING)) console.error(e.formattedMessage.trim());
  }
  const errors = diagnostics.filter((e) => e.severity === "error");
  for (const e of errors) console.error(e.formattedMessage.trim());
  if (errors.length) process.exit(1);
  return output.contracts || {};
}

function sortKeys(value) {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((k) => [k, sortKeys(value[k])]),
    );
  }
  return value;
}

const artifactPath = (name) => path.join(ARTIFACTS[name], `${name}.json`);

async function buildArtifacts(useCache) {
  const all = Object.entries(readSources());
  const passes = [
    [Object.fromEntries(all.filter(([name]) => !VIA_IR.has(name))), false],
    [Object.fromEntries(all.filter(([name]) => VIA_IR.has(name))), true],
  ].filter(([sources]) => Object.keys(sources).length > 0);
  const outputs = await Promise.all(passes.map(([sources, viaIR]) => compilePass(sources, viaIR, useCache)));

  const artifacts = new Map(); // path relative to the artifact root -> file text
  for (const output of outputs) {
    for (const byName of Object.values(contractsOf(output))) {
      for (const [name, out] of Object.entries(byName)) {
        if (!(name in ARTIFACTS)) continue;
        if (artifacts.has(artifactPath(name))) throw new Error(`contract ${name} is defined twice`);
        const artifact = { contractName: name, abi: out.abi, bytecode: `0x${out.evm.bytecode.object}` };
        artifacts.set(artifactPath(name), `${JSON.stringify(sortKeys(artifact), null, 2)}\n`);
      }
    }
  }
  const missing = Object.keys(ARTIFACTS).filter((name) => !artifacts.has(artifactPath(name)));
  if (missing.length) {
    console.error(`no contract in the sources for: ${missing.join(", ")}`);
    process.exit(1);
  }
  return artifacts;
}

function existingArtifacts(outDir) {
  const found = [];
  for (const sub of new Set(Object.values(ARTIFACTS))) {
    const dir = path.join(outDir, sub);
    if (!existsSync(dir)) continue;
    for (const f of readdirSync(dir).sort()) if (f.endsWith(".json")) found.push(path.join(sub, f));
  }
  return found;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const started = Date.now();
  const artifacts = await buildArtifacts(args.cache);
  const shown = (rel) => path.relative(process.cwd(), path.join(args.out, rel)) || ".";

  if (args.check) {
    const problems = [];
    for (const [rel, text] of artifacts) {
      const file = path.join(args.out, rel);
      if (!existsSync(file)) problems.push(`missing: ${shown(rel)}`);
      else if (readFileSync(file, "utf8") !== text) problems.push(`stale: ${shown(rel)}`);
    }
    for (const rel of existingArtifacts(args.out)) {
      if (!artifacts.has(rel)) problems.push(`unexpected: ${shown(rel)}`);
    }
    if (problems.length) {
      console.error("contract artifacts do not match the sources:");
      for (const p of problems) console.error(`  ${p}`);
      console.error("regenerate them with: node scripts/compile_contracts.mjs");
      process.exit(1);
    }
    console.log(`${artifacts.size} contract artifacts match the sources (${Date.now() - started} ms)`);
    return;
  }

  for (const [rel, text] of artifacts) {
    const file = path.join(args.out, rel);
    mkdirSync(path.dirname(file), { recursive: true });
    if (!existsSync(file) || readFileSync(file, "utf8") !== text) writeFileSync(file, text);
  }
  console.log(`wrote ${artifacts.size} contract artifacts to ${shown("")} (${Date.now() - started} ms)`);
}

if (isMainThread) {
  await main();
} else {
  workerMain();
}
