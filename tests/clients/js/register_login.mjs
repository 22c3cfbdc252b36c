// matrix-js-sdk registers, logs in and checks its session against a Parley at argv[2].
// Prints one JSON line with what it saw; exits non-zero on any failure.
import * as sdk from "matrix-js-sdk";

const baseUrl = process.argv[2];
const username = `js${Date.now()}`;
const password = "js-sdk password";

const anon = sdk.createClient({ baseUrl });
let registered;
try {
  registered = await anon.register(username, password, null, { type: "m.login.dummy" });
} catch (e) {
  // The SDK surfaces the UIA 401 as an error carrying the flows; complete the dummy stage.
  if (e.httpStatus !== 401 || !e.data?.session) throw e;
  registered = await anon.register(username, password, e.data.session, { type: "m.login.dummy" });
}

const login = await anon.loginRequest({
  type: "m.login.password",
  identifier: { type: "m.id.user", user: username },
  password,
});
const client = sdk.createClient({ baseUrl, accessToken: login.access_token, userId: login.user_id });
const whoami = await client.whoami();
const versions = await client.getVersions();
await client.setDisplayName("JS Client");
const profile = await client.getProfileInfo(login.user_id);
await client.logout(true);

console.log(JSON.stringify({
  registered_user_id: registered.user_id,
  login_user_id: login.user_id,
  whoami_user_id: whoami.user_id,
  versions: versions.versions,
  displayname: profile.displayname,
}));
process.exit(0);
