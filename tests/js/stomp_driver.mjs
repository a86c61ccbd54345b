// A line-oriented driver for the real @stomp/stompjs 7 client in Node (over `ws`).
//
// stdin:  one JSON command a line, {"id": 1, "cmd": "connect", ...}.
// stdout: one JSON event a line. Every command is answered by {"event": "result", "id",
//         "result"} or {"event": "reply_error", "id", "error"}; client events (connected,
//         message, receipt, stomp_error, ws_close, unhandled_message) are reported as they
//         happen.

import { createInterface } from 'node:readline';
import { Client } from '@stomp/stompjs';
import WebSocket from 'ws';

let client = null;
const subscriptions = new Map();

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

function frameOf(frame) {
  return { command: frame.command, headers: { ...frame.headers }, body: frame.body };
}

function onMessage(message) {
  emit({ event: 'message', ...frameOf(message) });
}

const commands = {
  // {url, connectHeaders, heartbeatIncoming?, heartbeatOutgoing?, reconnectDelay?,
  //  wsHeaders?: HTTP headers of the WebSocket handshake, e.g. a Cookie}
  connect(msg) {
    const wsOptions = msg.wsHeaders ? { headers: msg.wsHeaders } : undefined;
    client = new Client({
      webSocketFactory: () => new WebSocket(msg.url, ['v12.stomp', 'v11.stomp', 'v10.stomp'], wsOptions),
      connectHeaders: msg.connectHeaders || {},
      heartbeatIncoming: msg.heartbeatIncoming ?? 10000,
      heartbeatOutgoing: msg.heartbeatOutgoing ?? 10000,
      reconnectDelay: msg.reconnectDelay ?? 0,
      debug: () => {},
    });
    client.onConnect = (frame) => {
      emit({ event: 'connected', ...frameOf(frame) });
      // a reconnect resubscribes what the test asked for, with its (updated) headers
      for (const [id, sub] of subscriptions) {
        sub.handle = client.subscribe(sub.destination, onMessage, { ...sub.headers, id });
      }
    };
    client.onStompError = (frame) => emit({ event: 'stomp_error', ...frameOf(frame) });
    client.onWebSocketClose = (evt) => emit({ event: 'ws_close', code: evt.code, reason: evt.reason });
    client.onUnhandledMessage = (message) => emit({ event: 'unhandled_message', ...frameOf(message) });
    client.onUnhandledReceipt = (frame) => emit({ event: 'receipt', ...frameOf(frame) });
    client.activate();
    return {};
  },
  // {destination, subId, headers}
  subscribe(msg) {
    const sub = { destination: msg.destination, headers: msg.headers || {} };
    subscriptions.set(msg.subId, sub);
    if (client.connected) {
      sub.handle = client.subscribe(msg.destination, onMessage, { ...sub.headers, id: msg.subId });
    }
    return { connected: client.connected };
  },
  // {subId, headers}: headers used when the subscription is made again (on reconnect)
  setSubscribeHeaders(msg) {
    subscriptions.get(msg.subId).headers = msg.headers;
    return {};
  },
  unsubscribe(msg) {
    subscriptions.get(msg.subId).handle.unsubscribe();
    subscriptions.delete(msg.subId);
    return {};
  },
  // {destination, body, headers}
  publish(msg) {
    client.publish({ destination: msg.destination, body: msg.body, headers: msg.headers || {} });
    return {};
  },
  // {receipt}: resolves when the server confirms
  watchReceipt(msg) {
    client.watchForReceipt(msg.receipt, (frame) => emit({ event: 'receipt', ...frameOf(frame) }));
    return {};
  },
  async disconnect() {
    await client.deactivate();
    return {};
  },
  state() {
    return { connected: client ? client.connected : false };
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
    if (!client && cmd !== 'connect') throw new Error('connect first');
    emit({ event: 'result', id, cmd, result: (await fn(msg)) ?? {} });
  } catch (e) {
    emit({ event: 'reply_error', id, cmd, error: { message: String(e && e.stack ? e.stack : e) } });
  }
}

process.on('unhandledRejection', (e) => emit({ event: 'unhandled', error: String(e) }));
process.on('uncaughtException', (e) => emit({ event: 'unhandled', error: String(e) }));

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (line.trim()) handle(line);
});
rl.on('close', () => process.exit(0));
emit({ event: 'ready', version: process.version });
