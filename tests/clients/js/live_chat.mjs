// Two matrix-js-sdk clients chat through Parley at argv[2], each receiving the other's
// messages live through its own /sync loop: a DM and a group room.
// Prints one JSON line describing what each side received; exits non-zero on failure.
import * as sdk from "matrix-js-sdk";

const baseUrl = process.argv[2];
const suffix = Date.now().toString(36);
const deadline = (ms, what) =>
  new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms));

async function account(name) {
  const anon = sdk.createClient({ baseUrl });
  const password = "live chat password";
  const username = `${name}${suffix}`;
  try {
    await anon.register(username, password, null, { type: "m.login.dummy" });
  } catch (e) {
    if (e.httpStatus !== 401 || !e.data?.session) throw e;
    await anon.register(username, password, e.data.session, { type: "m.login.dummy" });
  }
  const login = await anon.loginRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: username }, password });
  const client = sdk.createClient({ baseUrl, accessToken: login.access_token, userId: login.user_id, deviceId: login.device_id });
  const received = [];
  client.on(sdk.RoomEvent.Timeline, (event, room, toStartOfTimeline) => {
    if (toStartOfTimeline || event.getType() !== "m.room.message") return;
    received.push({ room: room.roomId, sender: event.getSender(), body: event.getContent().body });
  });
  await client.startClient({ initialSyncLimit: 10 });
  await Promise.race([
    new Promise((resolve) => client.once(sdk.ClientEvent.Sync, (state) => state === "PREPARED" && resolve())),
    deadline(20000, `${name}'s first sync`),
  ]);
  return { client, received, userId: login.user_id };
}

async function until(predicate, what) {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > 20000) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function joinWhenInvited(side, roomId) {
  await until(() => side.client.getRoom(roomId)?.getMyMembership() === "invite", `invite to ${roomId}`);
  await side.client.joinRoom(roomId);
  await until(() => side.client.getRoom(roomId)?.getMyMembership() === "join", `join of ${roomId}`);
}

const alice = await account("alice");
const bob = await account("bob");
const carol = await account("carol");

const dm = await alice.client.createRoom({ preset: "trusted_private_chat", is_direct: true, invite: [bob.userId] });
const group = await alice.client.createRoom({ preset: "private_chat", name: "Group", invite: [bob.userId, carol.userId] });
await joinWhenInvited(bob, dm.room_id);
await joinWhenInvited(bob, group.room_id);
await joinWhenInvited(carol, group.room_id);

await alice.client.sendTextMessage(dm.room_id, "hello bob, privately");
await alice.client.sendTextMessage(group.room_id, "hello everyone");
await until(() => bob.received.some((m) => m.body === "hello bob, privately"), "bob to receive the DM");
await until(() => bob.received.some((m) => m.body === "hello everyone"), "bob to receive the group message");
await until(() => carol.received.some((m) => m.body === "hello everyone"), "carol to receive the group message");
await bob.client.sendTextMessage(dm.room_id, "hi alice");
await carol.client.sendTextMessage(group.room_id, "hi all");
await until(() => alice.received.some((m) => m.body === "hi alice"), "alice to receive bob's reply");
await until(() => alice.received.some((m) => m.body === "hi all") && bob.received.some((m) => m.body === "hi all"), "carol's message");

for (const side of [alice, bob, carol]) side.client.stopClient();
console.log(JSON.stringify({
  dm: dm.room_id,
  group: group.room_id,
  alice: alice.received,
  bob: bob.received,
  carol: carol.received,
}));
process.exit(0);
