// Two matrix-js-sdk clients with the Rust crypto stack (initRustCrypto, in memory) hold an
// encrypted DM through Parley at argv[2]: keys are uploaded at login, queried and claimed,
// room keys travel as olm-encrypted to-device messages, and each side decrypts the other's
// megolm-encrypted messages. Both set up cross-signing (signing keys and signatures uploaded,
// tracked through device-list changes). Prints one JSON line: what each side decrypted, and every error
// the SDK or its crypto logged; exits non-zero on failure.
import * as sdk from "matrix-js-sdk";

const baseUrl = process.argv[2];
const suffix = Date.now().toString(36);
const errors = [];

// The crypto stack logs through the console as well as through the SDK's logger.
for (const level of ["error"]) {
  const original = console[level].bind(console);
  console[level] = (...args) => {
    errors.push({ source: "console", message: args.map(String).join(" ") });
    original(...args);
  };
}

function collectingLogger(name) {
  const sink = (level) => (...msg) => {
    if (level === "error") errors.push({ source: name, message: msg.map(String).join(" ") });
    if (process.env.E2EE_DEBUG) process.stderr.write(`[${name} ${level}] ${msg.map(String).join(" ")}\n`);
  };
  const log = {
    trace: sink("trace"), debug: sink("debug"), info: sink("info"), warn: sink("warn"), error: sink("error"),
    getChild: () => log,
  };
  return log;
}

async function account(name) {
  const anon = sdk.createClient({ baseUrl, logger: collectingLogger(name) });
  const password = "e2ee dm password";
  const username = `${name}${suffix}`;
  try {
    await anon.register(username, password, null, { type: "m.login.dummy" });
  } catch (e) {
    if (e.httpStatus !== 401 || !e.data?.session) throw e;
    await anon.register(username, password, e.data.session, { type: "m.login.dummy" });
  }
  const login = await anon.loginRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: username }, password });
  const client = sdk.createClient({
    baseUrl, accessToken: login.access_token, userId: login.user_id, deviceId: login.device_id, logger: collectingLogger(name),
  });
  await client.initRustCrypto({ useIndexedDB: false });
  const decrypted = [];
  client.on(sdk.MatrixEventEvent.Decrypted, (event) => {
    if (event.isDecryptionFailure()) {
      decrypted.push({ failure: event.decryptionFailureReason ?? "unknown", room: event.getRoomId() });
    } else if (event.getType() === "m.room.message") {
      decrypted.push({ room: event.getRoomId(), sender: event.getSender(), body: event.getContent().body });
    }
  });
  await client.startClient({ initialSyncLimit: 10 });
  await until(() => client.getSyncState() === "PREPARED" || client.getSyncState() === "SYNCING", `${name}'s first sync`);
  return { client, decrypted, userId: login.user_id, deviceId: login.device_id, accessToken: login.access_token };
}

async function until(predicate, what, ms = 30000) {
  const start = Date.now();
  while (!(await predicate())) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// Cross-signing with the real crypto stack: the first upload of signing keys needs no UIA
// (the callback passes no auth), then the client signs its device and master key.
async function bootstrapCrossSigning(side) {
  await side.client.getCrypto().bootstrapCrossSigning({
    authUploadDeviceSigningKeys: async (makeRequest) => { await makeRequest(null); },
  });
  await until(() => side.client.getCrypto().isCrossSigningReady(), "cross-signing to be ready");
}

const alice = await account("alice");
const bob = await account("bob");
await bootstrapCrossSigning(alice);

// Each client uploaded its device keys at start: the other can see them.
await until(async () => {
  const keys = await alice.client.getCrypto().getUserDeviceInfo([bob.userId], true);
  return keys.get(bob.userId)?.has(bob.deviceId);
}, "alice to see bob's device keys");

const { room_id: roomId } = await alice.client.createRoom({
  preset: "trusted_private_chat",
  is_direct: true,
  invite: [bob.userId],
  initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
});
await until(() => bob.client.getRoom(roomId)?.getMyMembership() === "invite", "bob's invite");
await bob.client.joinRoom(roomId);
await until(() => alice.client.getRoom(roomId)?.getMember(bob.userId)?.membership === "join", "alice to see bob join");
await until(() => alice.client.getCrypto().isEncryptionEnabledInRoom(roomId), "alice's room to be encrypted");
await until(() => bob.client.getCrypto().isEncryptionEnabledInRoom(roomId), "bob's room to be encrypted");

await alice.client.sendTextMessage(roomId, "secret for bob");
await until(() => bob.decrypted.some((m) => m.body === "secret for bob"), "bob to decrypt alice's message");
await bob.client.sendTextMessage(roomId, "secret reply for alice");
await until(() => alice.decrypted.some((m) => m.body === "secret reply for alice"), "alice to decrypt bob's reply");
await alice.client.sendTextMessage(roomId, "second secret");
await until(() => bob.decrypted.some((m) => m.body === "second secret"), "bob to decrypt the second message");

// Bob sets up cross-signing only now: Alice learns of it through device_lists.changed in her
// sync (Bob shares a room with her), re-fetches his keys and sees his device signed by him.
await bootstrapCrossSigning(bob);
await until(async () => {
  const status = await alice.client.getCrypto().getDeviceVerificationStatus(bob.userId, bob.deviceId);
  return status?.signedByOwner === true;
}, "alice to see bob's device cross-signed by bob");
const aliceSeenByBob = await bob.client.getCrypto().getDeviceVerificationStatus(alice.userId, alice.deviceId);

for (const side of [alice, bob]) side.client.stopClient();
console.log(JSON.stringify({
  room: roomId,
  cross_signed: { bob_device_seen_by_alice: true, alice_device_seen_by_bob: aliceSeenByBob?.signedByOwner === true },
  alice: { user_id: alice.userId, device_id: alice.deviceId, decrypted: alice.decrypted },
  // Bob's token lets the test fetch the room's history as Bob sees it.
  bob: { user_id: bob.userId, device_id: bob.deviceId, access_token: bob.accessToken, decrypted: bob.decrypted },
  errors,
}));
process.exit(0);
