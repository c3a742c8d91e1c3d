// A Fabstir host's P2P side written against js-libp2p: the independent peer of the interop
// test (tests/integration/test_host_p2p_js.py). It joins the DHT through BOOTSTRAP, provides
// the record MODEL_KEY, answers /fabstir/host/1.0.0 (uvarint-length-prefixed JSON, as
// lpStream frames it) with a liveness pong signed EIP-191 by HOST_KEY, then prints one JSON
// line {"peerId", "addrs"} and serves until stdin closes.
//
// Environment: BOOTSTRAP (a multiaddr ending in /p2p/<id>), MODEL_KEY (the CID string of
// fabstir_sdk.p2p.model_key), MODEL_ID (0x bytes32), HOST_KEY (0x hex, a devnet key),
// CHAIN_ID.

if (!Promise.withResolvers) {
  // js-libp2p 3 wants Node >= 22; this is all it needs from it on Node 20
  Promise.withResolvers = function () {
    let resolve, reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { identify } = await import('@libp2p/identify')
const { ping } = await import('@libp2p/ping')
const { kadDHT, passthroughMapper } = await import('@libp2p/kad-dht')
const { lpStream } = await import('@libp2p/utils')
const { multiaddr } = await import('@multiformats/multiaddr')
const { CID } = await import('multiformats/cid')
const { secp256k1 } = await import('@noble/curves/secp256k1.js')
const { keccak_256: keccak256 } = await import('@noble/hashes/sha3.js')

const env = (name) => {
  const value = process.env[name]
  if (!value) throw new Error(`set ${name}`)
  return value
}
const hexToBytes = (hex) => Uint8Array.from(Buffer.from(hex.replace(/^0x/, ''), 'hex'))
const bytesToHex = (bytes) => '0x' + Buffer.from(bytes).toString('hex')

const hostKey = hexToBytes(env('HOST_KEY'))
const chainId = Number(env('CHAIN_ID'))
const modelId = env('MODEL_ID')
const uncompressed = secp256k1.getPublicKey(hostKey, false)
const hostAddress = checksum(bytesToHex(keccak256(uncompressed.slice(1)).slice(12)))

function checksum (address) {
  const lower = address.slice(2).toLowerCase()
  const hash = Buffer.from(keccak256(new TextEncoder().encode(lower))).toString('hex')
  return '0x' + [...lower].map((c, i) => (parseInt(hash[i], 16) >= 8 ? c.toUpperCase() : c)).join('')
}

function personalSign (text) {
  const message = new TextEncoder().encode(text)
  const prefix = new TextEncoder().encode(`\x19Ethereum Signed Message:\n${message.length}`)
  const digest = keccak256(new Uint8Array([...prefix, ...message]))
  const recovered = secp256k1.sign(digest, hostKey, { prehash: false, format: 'recovered' })
  return bytesToHex(new Uint8Array([...recovered.slice(1), 27 + recovered[0]]))
}

function answer (request, localPeer) {
  switch (request.type) {
    case 'ping': {
      if (typeof request.nonce !== 'string' || !/^[0-9a-f]{64}$/.test(request.nonce)) {
        return { type: 'error', code: 'bad_request', message: 'bad nonce' }
      }
      const timestamp = Math.floor(Date.now() / 1000)
      const text = 'fabstir host liveness v1\n' +
        `chain:${chainId}\nhost:${hostAddress.toLowerCase()}\npeer:${localPeer}\n` +
        `nonce:${request.nonce}\ntime:${timestamp}`
      return {
        type: 'pong',
        nonce: request.nonce,
        host: hostAddress,
        peer_id: localPeer,
        chain_id: chainId,
        timestamp,
        signature: personalSign(text)
      }
    }
    case 'models':
      return { type: 'models', models: [modelId] }
    case 'load':
      return { type: 'load', active_sessions: 0, max_sessions: 1, queued: 0 }
    default:
      return { type: 'error', code: 'unknown_type', message: `unknown request type '${request.type}'` }
  }
}

const node = await createLibp2p({
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    ping: ping(),
    // loopback addresses are kept (the default mapper drops private ones)
    dht: kadDHT({ protocol: '/ipfs/kad/1.0.0', clientMode: false, peerInfoMapper: passthroughMapper })
  }
})

await node.handle('/fabstir/host/1.0.0', async (stream) => {
  const lp = lpStream(stream, { maxDataLength: 64 * 1024 })
  try {
    while (true) {
      const frame = await lp.read()
      const request = JSON.parse(new TextDecoder().decode(frame.subarray()))
      const reply = answer(request, node.peerId.toString())
      await lp.write(new TextEncoder().encode(JSON.stringify(reply)))
    }
  } catch {
    // the client hung up (or sent garbage): this stream is done
  }
})

await node.dial(multiaddr(env('BOOTSTRAP')))
const dht = node.services.dht
for (let i = 0; i < 200 && dht.routingTable.size === 0; i++) {
  await new Promise((resolve) => setTimeout(resolve, 25))
}
for await (const _ of dht.provide(CID.parse(env('MODEL_KEY')))) { /* drain the query */ }

console.log(JSON.stringify({
  peerId: node.peerId.toString(),
  addrs: node.getMultiaddrs().map((a) => a.toString())
}))
process.stdin.resume()
process.stdin.on('end', async () => { await node.stop(); process.exit(0) })
