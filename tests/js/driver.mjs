// A line-oriented driver for the real centrifuge-js client, for tests in any language.
//
// stdin:  one JSON command a line, {"id": 1, "cmd": "connect", ...}.
// stdout: one JSON event a line. Every command is answered by {"event": "result", "id",
//         "result"} or {"event": "reply_error", "id", "error": {code, message}}; client and
//         subscription events (state changes, publications, join/leave, errors) are
//         reported as they happen.
//
// Tokens: when a command asks for getToken, the callback prints {"event": "need_token",
// "req": n, "channel": null | "<channel>"} and waits for {"cmd": "token", "req": n,
// "token": "..."} (an empty token means "unauthorized"), or {"cmd": "token", "req": n,
// "error": "..."} to make the callback reject.
//
// Stream state: a subscription created with getState: true asks the test for the app's
// state position the same way: {"event": "need_state", "req": n, "channel"} answered by
// {"cmd": "state", "req": n, "offset": o, "epoch": "e"}.

//
// `node driver.mjs protobuf` drives the Protobuf build (centrifuge/build/protobuf): data
// goes out as the UTF-8 bytes of its JSON, and bytes that come in (publication data,
// info, subscription data) are reported parsed from JSON, or as {"bytes": [..]} if they
// are not JSON.

import { createInterface } from 'node:readline';
import WebSocket from 'ws';

const PROTOBUF = process.argv[2] === 'protobuf';
const { Centrifuge, UnauthorizedError } = await import(
  PROTOBUF ? 'centrifuge/build/protobuf' : 'centrifuge'
);

function fromBytes(bytes) {
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (e) {
    return { bytes: Array.from(bytes) };
  }
}

// What a command's data becomes on the wire: JSON as it is, or its bytes for protobuf
// ({"bytes": [..]} sends exactly those bytes).
function toWire(data) {
  if (!PROTOBUF) return data;
  if (data && typeof data === 'object' && Array.isArray(data.bytes)) return new Uint8Array(data.bytes);
  return new TextEncoder().encode(JSON.stringify(data));
}

let client = null;
let nextReq = 1;
const pendingTokens = new Map();

function emit(event) {
  process.stdout.write(
    JSON.stringify(event, (_, v) => {
      if (typeof v === 'bigint') return Number(v);
      if (v instanceof Uint8Array) return fromBytes(v);
      return v;
    }) + '\n',
  );
}

function errorOf(e) {
  if (e && typeof e === 'object' && 'code' in e) {
    return { code: e.code, message: e.message ?? '', temporary: e.temporary ?? false };
  }
  return { code: null, message: String(e && e.stack ? e.stack : e) };
}

function askToken(channel) {
  const req = nextReq++;
  emit({ event: 'need_token', req, channel });
  return new Promise((resolve, reject) => pendingTokens.set(req, { resolve, reject }));
}

function askState(channel) {
  const req = nextReq++;
  emit({ event: 'need_state', req, channel });
  return new Promise((resolve, reject) => pendingTokens.set(req, { resolve, reject }));
}

function pub(ctx) {
  return {
    channel: ctx.channel,
    data: ctx.data,
    offset: ctx.offset,
    tags: ctx.tags,
    info: ctx.info,
  };
}

function subCtx(ctx) {
  return {
    channel: ctx.channel,
    recovered: ctx.recovered,
    wasRecovering: ctx.wasRecovering,
    recoverable: ctx.recoverable,
    positioned: ctx.positioned,
    streamPosition: ctx.streamPosition,
    data: ctx.data,
  };
}

function createClient(msg) {
  const options = { websocket: WebSocket, debug: false, ...(msg.options || {}) };
  if (msg.token !== undefined) options.token = msg.token;
  if (msg.getToken) options.getToken = () => askToken(null);
  const c = new Centrifuge(msg.url, options);
  c.on('connecting', (ctx) => emit({ event: 'state', state: 'connecting', code: ctx.code, reason: ctx.reason }));
  c.on('connected', (ctx) => emit({ event: 'state', state: 'connected', client: ctx.client, transport: ctx.transport, data: ctx.data }));
  c.on('disconnected', (ctx) => emit({ event: 'state', state: 'disconnected', code: ctx.code, reason: ctx.reason }));
  c.on('error', (ctx) => emit({ event: 'client_error', type: ctx.type, error: errorOf(ctx.error) }));
  // Server-side subscriptions (the token's channels claim) report here, not on a Subscription.
  c.on('subscribing', (ctx) => emit({ event: 'server_sub_state', state: 'subscribing', channel: ctx.channel }));
  c.on('subscribed', (ctx) => emit({ event: 'server_sub_state', state: 'subscribed', ...subCtx(ctx) }));
  c.on('unsubscribed', (ctx) => emit({ event: 'server_sub_state', state: 'unsubscribed', channel: ctx.channel }));
  c.on('publication', (ctx) => emit({ event: 'publication', scope: 'client', ...pub(ctx) }));
  c.on('join', (ctx) => emit({ event: 'join', scope: 'client', channel: ctx.channel, user: ctx.info.user, client: ctx.info.client }));
  c.on('leave', (ctx) => emit({ event: 'leave', scope: 'client', channel: ctx.channel, user: ctx.info.user, client: ctx.info.client }));
  c.on('message', (ctx) => emit({ event: 'message', data: ctx.data }));
  return c;
}

function newSubscription(msg) {
  const opts = { ...(msg.options || {}) };
  if (msg.token !== undefined) opts.token = msg.token;
  if (msg.getToken) opts.getToken = (ctx) => askToken(ctx.channel);
  if (msg.getState) opts.getState = () => askState(msg.channel);
  const sub = client.newSubscription(msg.channel, opts);
  const ch = msg.channel;
  sub.on('subscribing', (ctx) => emit({ event: 'sub_state', state: 'subscribing', channel: ch, code: ctx.code, reason: ctx.reason }));
  sub.on('subscribed', (ctx) => emit({ event: 'sub_state', state: 'subscribed', ...subCtx(ctx) }));
  sub.on('unsubscribed', (ctx) => emit({ event: 'sub_state', state: 'unsubscribed', channel: ch, code: ctx.code, reason: ctx.reason }));
  sub.on('error', (ctx) => emit({ event: 'sub_error', channel: ch, type: ctx.type, error: errorOf(ctx.error) }));
  sub.on('publication', (ctx) => emit({ event: 'publication', scope: 'sub', ...pub(ctx) }));
  sub.on('join', (ctx) => emit({ event: 'join', scope: 'sub', channel: ch, user: ctx.info.user, client: ctx.info.client }));
  sub.on('leave', (ctx) => emit({ event: 'leave', scope: 'sub', channel: ch, user: ctx.info.user, client: ctx.info.client }));
  return sub;
}

function subscription(channel) {
  const sub = client.getSubscription(channel);
  if (!sub) throw new Error(`no subscription to ${channel}`);
  return sub;
}

const commands = {
  // {url, token?, getToken?, options?}: create the client (once) and connect it.
  connect(msg) {
    if (!client) client = createClient(msg);
    client.connect();
    return { state: client.state };
  },
  disconnect() {
    client.disconnect();
    return { state: client.state };
  },
  // {channel, token?, getToken?, options?: {joinLeave, since, recoverable, positioned, data}}
  newSubscription(msg) {
    return { state: newSubscription(msg).state };
  },
  // {channel, ...}: creates the subscription if needed, then subscribes.
  subscribe(msg) {
    const sub = client.getSubscription(msg.channel) || newSubscription(msg);
    sub.subscribe();
    return { state: sub.state };
  },
  unsubscribe(msg) {
    const sub = subscription(msg.channel);
    sub.unsubscribe();
    return { state: sub.state };
  },
  removeSubscription(msg) {
    client.removeSubscription(subscription(msg.channel));
    return {};
  },
  // {channel, data, via: "client" | "sub"}
  publish(msg) {
    const target = msg.via === 'sub' ? subscription(msg.channel) : null;
    const data = toWire(msg.data);
    return target ? target.publish(data) : client.publish(msg.channel, data);
  },
  // {method, data}: an RPC (pushgate answers its own pushgate.* methods)
  rpc(msg) {
    return client.rpc(msg.method, toWire(msg.data));
  },
  presence(msg) {
    return msg.via === 'sub' ? subscription(msg.channel).presence() : client.presence(msg.channel);
  },
  presenceStats(msg) {
    return msg.via === 'sub' ? subscription(msg.channel).presenceStats() : client.presenceStats(msg.channel);
  },
  // {channel, limit?, since?, reverse?, via}
  history(msg) {
    const opts = {};
    for (const k of ['limit', 'since', 'reverse']) if (msg[k] !== undefined) opts[k] = msg[k];
    return msg.via === 'sub' ? subscription(msg.channel).history(opts) : client.history(msg.channel, opts);
  },
  // {channel}: centrifuge-js's delta compression statistics of the subscription
  deltaStats(msg) {
    return subscription(msg.channel).deltaStats();
  },
  state(msg) {
    const out = { state: client ? client.state : null };
    if (msg.channel) out.sub = client.getSubscription(msg.channel)?.state ?? null;
    return out;
  },
  token(msg) {
    const pending = pendingTokens.get(msg.req);
    if (!pending) throw new Error(`no pending token request ${msg.req}`);
    pendingTokens.delete(msg.req);
    if (msg.error !== undefined) pending.reject(new Error(msg.error));
    else if (msg.unauthorized) pending.reject(new UnauthorizedError(''));
    else pending.resolve(msg.token);
    return {};
  },
  // {req, offset, epoch}: the answer to a need_state event.
  state_position(msg) {
    const pending = pendingTokens.get(msg.req);
    if (!pending) throw new Error(`no pending state request ${msg.req}`);
    pendingTokens.delete(msg.req);
    pending.resolve({ offset: msg.offset, epoch: msg.epoch });
    return {};
  },
  exit() {
    if (client) client.disconnect();
    setImmediate(() => process.exit(0));
    return {};
  },
};

async function handle(line) {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch (e) {
    emit({ event: 'bad_command', line, error: String(e) });
    return;
  }
  const { id, cmd } = msg;
  try {
    const fn = commands[cmd];
    if (!fn) throw new Error(`unknown command ${cmd}`);
    if (!client && !['connect', 'token', 'exit'].includes(cmd)) throw new Error('connect first');
    const result = await fn(msg);
    emit({ event: 'result', id, cmd, result: result ?? {} });
  } catch (e) {
    emit({ event: 'reply_error', id, cmd, error: errorOf(e) });
  }
}

process.on('unhandledRejection', (e) => emit({ event: 'unhandled', error: errorOf(e) }));
process.on('uncaughtException', (e) => emit({ event: 'unhandled', error: errorOf(e) }));

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (line.trim()) handle(line);
});
rl.on('close', () => {
  if (client) client.disconnect();
  process.exit(0);
});
emit({ event: 'ready', version: process.version, protobuf: PROTOBUF });
