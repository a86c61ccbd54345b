/*!
 * pushgate.js — a small browser client for pushgate, speaking the Centrifugo client
 * protocol v2 (JSON) over WebSocket, SSE (+ POST /emulation), long polling or short polling.
 *
 * No dependencies, no build step. A classic script: <script src="/static/pushgate.js">
 * defines globalThis.Pushgate; `import Pushgate from '/static/pushgate.mjs'` is the ES
 * module form. Guide: docs/pushgate-js.md. Wire formats: docs/transports.md.
 */
(function (global) {
  'use strict';

  const VERSION = '0.1.0';

  const DEFAULTS = {
    token: '',
    getToken: null, // async () => connection JWT; '' or null means "no access"
    transports: ['websocket', 'sse', 'longpoll', 'poll'],
    minReconnectDelay: 500,
    maxReconnectDelay: 20000,
    pollInterval: 2000, // short polling period
    timeout: 10000, // command timeout
    name: 'pushgate-js',
    debug: false,
    attention: true, // report active / idle / hidden from page visibility and input
    idleAfter: 60, // seconds without input before a visible page counts as idle
    ackOn: 'visible', // acknowledge notifications that ask for it: 'visible' | 'receive' | 'manual'
  };

  // Client-side error codes. Errors from the server keep their own codes (100-112).
  // OFFLINE is not an error: it is the `state` event's code when the browser lost its network.
  const ERRORS = { TIMEOUT: 1, TRANSPORT_CLOSED: 2, DISCONNECTED: 3, UNSUBSCRIBED: 4, OFFLINE: 5, UNAUTHORIZED: 7 };

  class PushgateError extends Error {
    constructor(code, message, temporary) {
      super(message);
      Object.assign(this, { name: 'PushgateError', code, temporary: !!temporary });
    }
  }
  const replyError = (e) => new PushgateError(e.code, e.message || '', e.temporary);
  const isLocal = (err) => err && (err.code === ERRORS.TRANSPORT_CLOSED || err.code === ERRORS.DISCONNECTED);

  // Server disconnect codes: 3000-3499 and 4000-4499 mean "reconnect", 3500-3999 and
  // 4500-4999 mean "stay disconnected" (as centrifuge-js). Anything else is a transport close.
  const isServerCode = (code) => code >= 3000 && code < 5000;
  const mayReconnect = (code) => !((code >= 3500 && code < 4000) || (code >= 4500 && code < 5000));

  // Refresh a token a little before it expires (ttl in seconds; setTimeout caps at ~24 days).
  const refreshDelay = (ttl) => Math.min(2 ** 31 - 1, Math.max(0, ttl * 1000 - Math.min(30000, ttl * 200)));

  const pubContext = (channel, pub) => ({ channel, data: pub.data, offset: pub.offset || 0, info: pub.info, tags: pub.tags });

  function safeCall(fn, arg) {
    if (typeof fn !== 'function') return;
    try { fn(arg); } catch (err) { console.error('pushgate: an event handler threw', err); }
  }

  class Emitter {
    constructor() { this._handlers = {}; }
    on(event, fn) { (this._handlers[event] = this._handlers[event] || []).push(fn); return this; }
    off(event, fn) { this._handlers[event] = (this._handlers[event] || []).filter((f) => f !== fn); return this; }
    _emit(event, arg) { for (const fn of this._handlers[event] || []) safeCall(fn, arg); }
  }

  // --- Position: where one channel's stream is, for "once, in order" and recovery -------
  // A channel with history numbers its publications (`offset`) within a stream (`epoch`).
  class Position {
    constructor() {
      this.offset = 0; // last offset delivered (or the stream's top when subscribed)
      this.epoch = '';
      this.recoverable = false;
    }
    // The recovery fields of a subscribe command (or of connect `subs`), or null.
    request() {
      return this.recoverable && this.epoch ? { recover: true, offset: this.offset, epoch: this.epoch } : null;
    }
    // Takes in a subscribe result; returns the recovered publications not yet delivered,
    // in order. `pubsFollow`: the missed publications come as separate pushes afterwards
    // (a `subscribe` push from the server API), so the offset must not jump to the top.
    apply(result, pubsFollow) {
      const recovered = !!result.recovered;
      this.recoverable = !!result.recoverable;
      this.epoch = result.epoch || '';
      let pubs = [];
      if (!recovered) {
        this.offset = result.offset || 0; // start from the stream's top (new or unrecoverable)
      } else if (!pubsFollow) {
        pubs = (result.publications || []).filter((pub) => this.check(pub, false) === 'ok');
        this.offset = Math.max(this.offset, result.offset || 0);
      }
      return { recovered, wasRecovering: !!result.was_recovering, pubs };
    }
    // 'ok' (deliver; the offset advances), 'dup' (already delivered: drop), or 'gap'
    // (publications were missed: resubscribe with recovery instead of delivering).
    check(pub, live) {
      if (!pub.offset) return 'ok'; // a channel without history: nothing to compare
      if (pub.offset <= this.offset) return 'dup';
      if (live && this.recoverable && pub.offset > this.offset + 1) return 'gap';
      this.offset = pub.offset;
      return 'ok';
    }
  }

  // --- transports ---------------------------------------------------------------------
  // A transport carries protocol messages; the client owns the protocol. Interface:
  //   open(connectCommand)  deliver the connect command (first frame, URL, first request)
  //   connected(result)     the connect reply arrived (SSE takes `session` and `node`)
  //   send(commands)        an array of command objects, sent in order
  //   close()               stop quietly: no more callbacks
  // It reports to client._onTransportMessage(t, msg) and client._onTransportClose(t, {code, reason}).
  class Transport {
    constructor(client, name) { Object.assign(this, { name, _client: client, _closed: false }); }
    connected() {}
    close() { this._closed = true; }
    _fail(reason, code) {
      if (this._closed) return;
      this.close();
      this._client._onTransportClose(this, { code: code || 0, reason });
    }
    // Newline-delimited JSON messages, handed to the client one by one.
    _deliver(text) {
      if (typeof text !== 'string') text = new TextDecoder().decode(text);
      for (const line of text.split('\n')) {
        if (!line.trim()) continue;
        let msg;
        try { msg = JSON.parse(line); } catch (err) { return this._fail('malformed message from server'); }
        this._client._onTransportMessage(this, msg);
        if (this._closed) return;
      }
    }
  }

  class WebSocketTransport extends Transport {
    static supported() { return typeof WebSocket === 'function'; }
    open(connect) {
      const ws = (this._ws = new WebSocket(this._client._url('/connection/websocket', true)));
      ws.binaryType = 'arraybuffer';
      ws.onopen = () => ws.send(JSON.stringify(connect));
      ws.onmessage = (e) => this._deliver(e.data);
      ws.onclose = (e) => this._fail(e.reason || 'websocket closed', e.code); // a server disconnect carries its code
      ws.onerror = () => {}; // onclose follows
    }
    send(commands) { this._ws.send(commands.map((c) => JSON.stringify(c)).join('\n')); }
    close() {
      if (this._closed) return;
      super.close();
      if (!this._ws) return;
      this._ws.onclose = this._ws.onmessage = this._ws.onopen = null;
      try { this._ws.close(); } catch (err) { /* never opened */ }
    }
  }

  // SSE with bidirectional emulation: the connect command rides in the URL, replies and
  // pushes come as `data:` events, later commands go as POST /emulation {session, node, data}
  // with `data` the newline-joined commands as text. One /emulation request at a time,
  // so commands reach the server in the order they were sent.
  class SseTransport extends Transport {
    static supported() { return typeof EventSource === 'function' && typeof fetch === 'function'; }
    open(connect) {
      this._queue = [];
      this._sending = false;
      this._abort = typeof AbortController === 'function' ? new AbortController() : null;
      const url = this._client._url('/connection/sse', false) + '?cf_connect=' + encodeURIComponent(JSON.stringify(connect));
      this._es = new EventSource(url);
      this._es.onmessage = (e) => this._deliver(e.data);
      // EventSource would reconnect by itself, with the same (stale) connect command:
      // close it instead and let the client reconnect with a fresh one.
      this._es.onerror = () => this._fail('event stream closed');
    }
    connected(result) {
      this._session = result.session || '';
      this._node = result.node || '';
    }
    send(commands) {
      this._queue.push(...commands);
      this._drain();
    }
    async _drain() {
      if (this._sending || this._closed || !this._queue.length) return;
      const data = this._queue.splice(0).map((c) => JSON.stringify(c)).join('\n');
      this._sending = true;
      let status = 0;
      try {
        const body = JSON.stringify({ session: this._session, node: this._node, data });
        const headers = { 'Content-Type': 'application/json' };
        const res = await fetch(this._client._url('/emulation', false), { method: 'POST', headers, body, credentials: 'same-origin', signal: this._abort && this._abort.signal });
        status = res.status;
      } catch (err) { /* network error, or aborted by close() */ }
      this._sending = false;
      if (this._closed) return;
      // 404: this node does not know the session (restarted?). A network error or a server
      // failure loses the commands too: reconnect rather than wait for their timeouts.
      if (status === 0 || status === 404 || status >= 500) return this._fail('emulation: ' + (status || 'network error'));
      if (status >= 400) this._client._emit('error', { type: 'transport', error: new PushgateError(status, 'emulation refused the commands') });
      this._drain();
    }
    close() {
      if (this._closed) return;
      super.close();
      if (this._abort) this._abort.abort();
      if (this._es) this._es.close();
    }
  }

  // Long polling and short polling (docs/transports.md, "Long polling and short polling"):
  // a session, numbered messages acknowledged with `ack`, and request ids (`rid`) that make
  // a retried request safe. At most one request carrying commands is in flight, so commands
  // arrive in order and a retry never follows a newer rid with commands. On longpoll a poll
  // without commands waits beside it (the server answers the waiting one when the new one
  // arrives); on short poll the next poll goes `pollInterval` after the last answer.
  const POLL_RETRIES = 5; // retries of one request: 0.5 + 1 + 2 + 4 + 8 s, within the session timeout
  const LONGPOLL_TIMEOUT = 60000; // abort a long poll the server should have answered (hold: 25 s)

  class PollingTransport extends Transport {
    static supported() { return typeof fetch === 'function'; }
    open(connect) {
      this._long = this.name === 'longpoll';
      this._url = this._client._url('/connection/' + this.name, false);
      this._session = '';
      this._rid = 0;
      this._seq = 0; // last message seq processed, sent as `ack`
      this._ended = false; // a disconnect push was processed
      this._queue = [];
      this._busy = null; // the request with commands in flight
      this._idle = null; // the request without commands in flight
      this._timer = null;
      this._aborts = new Set();
      this.send([connect]);
    }
    send(commands) {
      this._queue.push(...commands);
      this._pump();
    }
    _pump() {
      if (this._closed) return;
      const started = this._session || this._rid === 0; // until the first answer: only the connect request
      if (this._queue.length && !this._busy && started) {
        clearTimeout(this._timer);
        this._timer = null;
        this._busy = this._request(this._queue.splice(0));
      } else if (!this._busy && !this._idle && !this._timer && this._session) {
        const poll = () => {
          this._timer = null;
          if (!this._busy && !this._idle) this._idle = this._request([]);
        };
        if (this._long) poll();
        else this._timer = setTimeout(poll, this._client._opts.pollInterval);
      }
    }
    _request(commands) {
      const req = { rid: ++this._rid, commands, tries: 0 };
      this._attempt(req);
      return req;
    }
    async _attempt(req) {
      const body = { rid: req.rid, ack: this._seq };
      if (this._session) body.session = this._session;
      if (req.commands.length) body.commands = req.commands;
      let status = 0;
      let answer = null;
      try {
        const res = await this._post(body, this._long ? LONGPOLL_TIMEOUT : this._client._opts.timeout);
        status = res.status;
        if (status === 200) answer = await res.json();
      } catch (err) { /* network error, timeout or bad JSON: retried below */ }
      if (this._closed) return;
      if (answer && typeof answer === 'object') return this._answered(req, answer);
      // The first request (connect) is not retried: failing it means "this transport does
      // not work here", and the client moves on to the next one.
      const retry = req.rid > 1 && (status === 0 || status === 200 || status === 408 || status === 429 || status >= 500);
      if (retry && req.tries < POLL_RETRIES) {
        const delay = 500 * 2 ** req.tries++;
        this._client._log(this.name, 'request', req.rid, 'failed (' + (status || 'network') + '), retry in', delay, 'ms');
        setTimeout(() => this._closed || this._attempt(req), delay); // same rid: its commands will not run twice
        return;
      }
      this._fail(status === 404 ? 'unknown session' : this.name + ' request failed: ' + (status || 'network error'));
    }
    _answered(req, answer) {
      if (req === this._busy) this._busy = null;
      if (req === this._idle) this._idle = null;
      if (answer.session) this._session = answer.session;
      for (const [seq, msg] of answer.messages || []) {
        if (seq <= this._seq) continue; // sent again because our ack had not reached the server
        this._seq = seq;
        if (msg && msg.push && msg.push.disconnect) this._ended = true;
        this._client._onTransportMessage(this, msg);
        if (this._closed) return;
      }
      this._pump();
    }
    _post(body, timeout, keepalive) {
      const abort = typeof AbortController === 'function' ? new AbortController() : null;
      const timer = abort && setTimeout(() => abort.abort(), timeout);
      if (abort && !keepalive) this._aborts.add(abort);
      const init = { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body), credentials: 'same-origin', keepalive };
      return fetch(this._url, Object.assign(init, { signal: abort && abort.signal })).finally(() => {
        clearTimeout(timer);
        this._aborts.delete(abort);
      });
    }
    close() {
      if (this._closed) return;
      super.close();
      clearTimeout(this._timer);
      for (const abort of this._aborts) abort.abort();
      // End the session on the server now rather than at its timeout: acknowledge a
      // disconnect push, or say we are leaving. Nobody waits for the answer.
      if (this._session) {
        const body = { session: this._session, rid: ++this._rid, ack: this._seq };
        if (!this._ended) body.close = true;
        this._post(body, 5000, true).catch(() => {});
      }
    }
  }

  const TRANSPORTS = { websocket: WebSocketTransport, sse: SseTransport, longpoll: PollingTransport, poll: PollingTransport };

  // --- Subscription (client-side) -------------------------------------------------------
  class Subscription {
    constructor(client, channel, opts) {
      this.channel = channel;
      this.state = 'unsubscribed'; // 'subscribing' | 'subscribed' | 'unsubscribed'
      this._client = client;
      this._opts = opts || {};
      this._token = this._opts.token || '';
      this._pos = new Position();
      this._gen = 0; // bumped on every (re)subscribe: answers to older attempts are ignored
      this._attempts = 0;
      this._waiters = [];
      this._timer = null; // retry or token refresh
    }

    publish(data) { return this.ready().then(() => this._client.publish(this.channel, data)); }
    presence() { return this.ready().then(() => this._client.presence(this.channel)); }
    presenceStats() { return this.ready().then(() => this._client.presenceStats(this.channel)); }
    history(opts) { return this.ready().then(() => this._client.history(this.channel, opts)); }
    unsubscribe() {
      const c = this._client;
      if (c._subs.get(this.channel) !== this) return Promise.resolve();
      this._unsubscribed(0, 'unsubscribe called');
      return c.state === 'connected' ? c._call('unsubscribe', { channel: this.channel }).then(() => {}) : Promise.resolve();
    }
    // Resolves once subscribed, waiting at most the command timeout.
    ready() {
      if (this.state === 'subscribed') return Promise.resolve();
      if (this.state === 'unsubscribed') return Promise.reject(new PushgateError(ERRORS.UNSUBSCRIBED, 'not subscribed'));
      return new Promise((resolve, reject) => {
        const w = { resolve, reject };
        w.timer = setTimeout(() => {
          this._waiters = this._waiters.filter((x) => x !== w);
          reject(new PushgateError(ERRORS.TIMEOUT, 'subscribe to ' + this.channel + ' timed out'));
        }, this._client._opts.timeout);
        this._waiters.push(w);
      });
    }
    _settle(err) {
      for (const w of this._waiters.splice(0)) { clearTimeout(w.timer); err ? w.reject(err) : w.resolve(); }
    }

    // Sends subscribe, with the recovery position when there is one. Runs on subscribe()
    // while connected, after every connect, and after an unsubscribe push asking for it.
    async _subscribe() {
      const c = this._client;
      const gen = ++this._gen;
      clearTimeout(this._timer);
      this.state = 'subscribing';
      if (c.state !== 'connected') return; // the connect reply will call us
      if (!this._token && this._opts.getToken) {
        try {
          this._token = (await this._opts.getToken({ channel: this.channel })) || '';
        } catch (error) {
          if (gen !== this._gen) return;
          safeCall(this._opts.onError, { channel: this.channel, type: 'token', error });
          return this._retry();
        }
      }
      if (gen !== this._gen || c.state !== 'connected') return;
      const params = Object.assign({ channel: this.channel }, this._pos.request());
      if (this._token) params.token = this._token;
      if (this._opts.joinLeave) params.join_leave = true;
      // The reply is handled synchronously, before the pushes that follow it on the wire
      // (a polling answer or a WebSocket read can carry both): they must see 'subscribed'.
      c._command('subscribe', params, (err, result) => {
        if (gen !== this._gen) return;
        if (err) this._onSubscribeError(err);
        else this._onSubscribed(result);
      });
    }
    _retry() {
      this._timer = setTimeout(() => this.state === 'subscribing' && this._subscribe(), this._client._backoff(this._attempts++));
    }
    _onSubscribed(result) {
      this.state = 'subscribed';
      this._attempts = 0;
      const { recovered, wasRecovering, pubs } = this._pos.apply(result, false);
      if (result.expires) this._scheduleRefresh(result.ttl);
      // onSubscribed first (on recovered:false the app reloads its state), then what
      // recovery brought, in order; live publications can only come after.
      safeCall(this._opts.onSubscribed, { channel: this.channel, recovered, wasRecovering, data: result.data });
      for (const pub of pubs) {
        safeCall(this._opts.onPublication, pubContext(this.channel, pub));
        this._client._delivered(this.channel, pub, this._pos.epoch);
      }
      this._settle();
    }
    _onSubscribeError(err) {
      const c = this._client;
      if (isLocal(err)) return; // the connection went away: resubscribed after the reconnect
      if (err.code === ERRORS.TIMEOUT) return c._dropTransport('subscribe timed out'); // reconnect, resubscribe
      const expired = err.code === 109 && this._opts.getToken;
      if (expired) this._token = ''; // ask getToken for a new one
      if (expired || err.temporary) return this._retry();
      safeCall(this._opts.onError, { channel: this.channel, type: 'subscribe', error: err });
      this._unsubscribed(err.code, err.message);
    }
    _unsubscribed(code, reason) {
      this._gen++;
      clearTimeout(this._timer);
      if (this._client._subs.get(this.channel) === this) this._client._subs.delete(this.channel);
      this.state = 'unsubscribed';
      this._settle(new PushgateError(ERRORS.UNSUBSCRIBED, reason || 'unsubscribed'));
      safeCall(this._opts.onUnsubscribed, { channel: this.channel, code, reason });
    }
    // The connection is lost: keep the position, resubscribe after the reconnect.
    _suspend() {
      if (this.state === 'unsubscribed') return;
      this._gen++;
      clearTimeout(this._timer);
      this.state = 'subscribing';
    }
    _scheduleRefresh(ttl) {
      clearTimeout(this._timer);
      if (!this._opts.getToken) return; // the server will unsubscribe with 2501 at expiry
      this._timer = setTimeout(async () => {
        try {
          const token = await this._opts.getToken({ channel: this.channel });
          if (!token || this.state !== 'subscribed') return;
          this._token = token;
          const r = await this._client._call('sub_refresh', { channel: this.channel, token });
          if (r.expires) this._scheduleRefresh(r.ttl);
        } catch (err) {
          if (!isLocal(err)) safeCall(this._opts.onError, { channel: this.channel, type: 'refresh', error: err });
        }
      }, refreshDelay(ttl));
    }
    _onPush(push) {
      const channel = this.channel;
      if (push.pub) {
        if (this.state !== 'subscribed') return; // the server sends the subscribe reply first
        const verdict = this._pos.check(push.pub, true);
        if (verdict === 'dup') return this._client._log('dropped duplicate', channel, push.pub.offset);
        if (verdict === 'gap') {
          // Publications were lost on the way: resubscribe from the last delivered offset.
          this._client._log('gap in', channel, 'after', this._pos.offset, '- recovering');
          this._client._call('unsubscribe', { channel }).catch(() => {});
          return this._subscribe();
        }
        safeCall(this._opts.onPublication, pubContext(channel, push.pub));
        this._client._delivered(channel, push.pub, this._pos.epoch);
      } else if (push.join) {
        safeCall(this._opts.onJoin, { channel, info: push.join.info });
      } else if (push.leave) {
        safeCall(this._opts.onLeave, { channel, info: push.leave.info });
      } else if (push.unsubscribe) {
        const { code, reason } = push.unsubscribe;
        if (code < 2500) return this._unsubscribed(code, reason);
        // 2500 insufficient state, 2501 subscription expired: resubscribe, recovering.
        if (code === 2501 && this._opts.getToken) this._token = '';
        this._subscribe();
      }
    }
  }

  // --- Attention: what the page says of its user (active / idle / hidden) ----------------
  // Hidden while the page is hidden; idle once visible without input for `idleAfter`
  // seconds; active otherwise. Each change is told with the `pushgate.presence` RPC (a
  // quarter second later, so that quick flips cost nothing), and the state at connect
  // travels in the connect command. Input only moves a timestamp.
  class Attention {
    constructor(client) {
      this._client = client;
      this._idleMs = client._opts.idleAfter * 1000;
      this.enabled = !!client._opts.attention && typeof document !== 'undefined' && typeof addEventListener === 'function';
      this._last = Date.now();
      this._sent = null; // what the server was last told
      this._timer = null;
      this._sendTimer = null;
      this.state = this._compute();
      if (typeof document !== 'undefined' && typeof addEventListener === 'function') {
        document.addEventListener('visibilitychange', () => {
          if (!document.hidden) { this._last = Date.now(); client._flushAcks(); }
          this._update();
        });
      }
      if (!this.enabled) return;
      const input = () => { this._last = Date.now(); if (this.state !== 'active') this._update(); };
      for (const type of ['pointerdown', 'pointermove', 'keydown', 'wheel', 'scroll', 'touchstart', 'focus']) {
        addEventListener(type, input, { passive: true, capture: true });
      }
      this._arm();
    }
    _compute() {
      if (typeof document !== 'undefined' && document.hidden) return 'hidden';
      return Date.now() - this._last >= this._idleMs ? 'idle' : 'active';
    }
    _arm() {
      clearTimeout(this._timer);
      this._timer = setTimeout(() => this._update(), Math.max(0, this._last + this._idleMs - Date.now()) + 50);
    }
    _update() {
      const state = this._compute();
      if (state === 'active') this._arm();
      if (state === this.state) return;
      this.state = state;
      this._client._emit('attention', { state });
      clearTimeout(this._sendTimer);
      this._sendTimer = setTimeout(() => this._flush(), 250);
    }
    // The state to put in a connect command, or null.
    connecting() { return this.enabled ? (this._connectState = this.state) : null; }
    connected() { this._sent = this._connectState || null; this._flush(); }
    _flush() {
      const c = this._client;
      if (!this.enabled || c.state !== 'connected' || this.state === this._sent) return;
      const state = (this._sent = this.state);
      c._rpc('pushgate.presence', { state }).catch(() => { if (this._sent === state) this._sent = null; });
    }
  }

  // --- Pushgate: the connection ---------------------------------------------------------
  class Pushgate extends Emitter {
    constructor(baseUrl, options) {
      super();
      this._base = String(baseUrl || '').replace(/\/+$/, '');
      this._opts = Object.assign({}, DEFAULTS, options || {});
      this._token = this._opts.token || '';
      this.state = 'disconnected';
      this.transport = null; // name of the transport in use (or being tried)
      this.client = null; // client id from the connect reply
      this._t = null;
      this._preferred = null; // the transport that worked: tried first on reconnect
      this._candidates = [];
      this._cycle = 0; // bumped by disconnect() and the network events: stale async steps check it
      this._nextId = 1;
      this._connectId = 0;
      this._pending = new Map(); // id -> {method, cmd, done, timer, sent}
      this._outbox = [];
      this._subs = new Map(); // channel -> Subscription
      this._serverSubs = new Map(); // channel -> Position of a server-side subscription
      this._attempts = 0;
      this._pong = false;
      this._pingMs = 0;
      this._timers = {};
      this._attention = new Attention(this);
      this._acks = []; // {channel, offset} shown, not yet acknowledged
      this._reads = new Map(); // channel -> {offset, epoch}: the user's read positions
      // A page going away (tab closed, navigation) ends its session at once: a polling
      // session would otherwise stay until its timeout, the user shown online meanwhile.
      // A page kept in the back-forward cache reconnects when it is shown again.
      if (typeof addEventListener === 'function') {
        addEventListener('pagehide', () => { if (this.state === 'connected') this._lost(0, 'page hidden'); });
        // The browser knows at once when the network goes; a transport would take up to
        // `ping + 10` s (websocket, sse) or its retries (~15 s, polling) to notice.
        addEventListener('offline', () => this._onOffline());
        addEventListener('online', () => this._onOnline());
      }
    }

    // --- public API ---
    connect() {
      if (this.state !== 'disconnected') return;
      this._attempts = 0;
      this._setState('connecting');
      this._startConnecting();
    }
    disconnect() { if (this.state !== 'disconnected') this._disconnect(0, 'disconnect called'); }
    subscribe(channel, options) {
      if (this._subs.has(channel)) throw new Error('pushgate: already subscribed to ' + channel);
      const sub = new Subscription(this, channel, options);
      this._subs.set(channel, sub);
      sub._subscribe();
      return sub;
    }
    getSubscription(channel) { return this._subs.get(channel) || null; }
    publish(channel, data) { return this._call('publish', { channel, data }).then(() => ({})); }
    presence(channel) { return this._call('presence', { channel }).then((r) => ({ clients: r.presence || {} })); }
    presenceStats(channel) {
      return this._call('presence_stats', { channel }).then((r) => ({ numClients: r.num_clients || 0, numUsers: r.num_users || 0 }));
    }
    // Asks the backend (pushgate's rpc proxy, docs/proxy.md): resolves with {data}, or
    // rejects with the backend's error (a PushgateError with its code and message). Made
    // while connecting, it waits for the connection (up to `timeout`), like publish.
    rpc(method, data) {
      return this._call('rpc', { method, data: data === undefined ? null : data }).then((r) => ({ data: r.data }));
    }
    // A message to the backend (the send proxy) that gets no reply; only when connected.
    send(data) {
      if (this.state !== 'connected') return Promise.reject(new PushgateError(ERRORS.DISCONNECTED, 'client is not connected'));
      this._send({ send: { data: data === undefined ? null : data } });
      return Promise.resolve();
    }
    // opts: {limit, since: {offset, epoch}, reverse}. limit 0/absent = only the position, -1 = all.
    history(channel, opts) {
      return this._call('history', Object.assign({ channel }, opts)).then((r) => ({
        publications: (r.publications || []).map((pub) => pubContext(channel, pub)),
        offset: r.offset || 0,
        epoch: r.epoch || '',
      }));
    }

    // --- connecting ---
    async _startConnecting() {
      const cycle = this._cycle;
      this._clear('reconnect');
      if (!this._token && this._opts.getToken) {
        let token, failed;
        try { token = await this._opts.getToken(); } catch (err) { failed = { type: 'token', error: err }; }
        if (cycle !== this._cycle) return;
        if (failed) {
          this._emit('error', failed);
          return this._scheduleReconnect();
        }
        if (!token) return this._disconnect(ERRORS.UNAUTHORIZED, 'unauthorized');
        this._token = token;
      }
      this._candidates = this._preferred ? [this._preferred] : this._opts.transports.slice();
      this._tryNext();
    }
    // Opens the next candidate transport; it carries the connect command itself.
    _tryNext() {
      if (this.state !== 'connecting') return;
      const name = this._candidates.shift();
      if (name === undefined) {
        if (!this._preferred) return this._scheduleReconnect();
        // What worked before does not open now: go through the whole list again.
        const failed = this._preferred;
        this._preferred = null;
        this._candidates = this._opts.transports.filter((n) => n !== failed);
        return this._tryNext();
      }
      const Kind = TRANSPORTS[name];
      if (!Kind || !Kind.supported()) {
        this._log('transport', name, 'is not available here');
        return this._tryNext();
      }
      const id = (this._connectId = this._nextId++);
      const params = { name: this._opts.name, version: VERSION };
      if (this._token) params.token = this._token;
      const attention = this._attention.connecting();
      if (attention) params.data = Object.assign({}, params.data, { pushgate: { state: attention } });
      const subs = {}; // recovery positions of server-side subscriptions
      for (const [channel, pos] of this._serverSubs) if (pos.request()) subs[channel] = pos.request();
      if (Object.keys(subs).length) params.subs = subs;
      const t = (this._t = new Kind(this, name));
      this.transport = name;
      this._log('connecting with', name);
      this._timer('connect', this._opts.timeout, () => this._dropTransport('connect timed out'));
      try {
        t.open({ id, connect: params });
      } catch (err) {
        this._log(name, 'could not open:', err);
        this._t = null;
        this._clear('connect');
        this._tryNext();
      }
    }
    _scheduleReconnect() {
      const delay = this._backoff(this._attempts++);
      this._log('reconnecting in', delay, 'ms');
      this._timer('reconnect', delay, () => this._startConnecting());
    }
    // Jittered exponential backoff: random in [min, min * 2^(attempt+1)], capped at max.
    _backoff(attempt) {
      const { minReconnectDelay: min, maxReconnectDelay: max } = this._opts;
      const top = Math.min(max, min * 2 ** Math.min(attempt + 1, 30));
      return Math.round(min + Math.random() * Math.max(0, top - min));
    }

    // --- transport callbacks ---
    _onTransportMessage(t, msg) {
      if (t !== this._t) return;
      if (this._timers.ping) this._armPing(); // anything received shows the connection lives
      if (msg.id) {
        if (msg.id === this._connectId) return this._onConnectReply(t, msg);
        const p = this._pending.get(msg.id);
        if (!p) return;
        this._pending.delete(msg.id);
        clearTimeout(p.timer);
        return msg.error ? p.done(replyError(msg.error)) : p.done(null, msg[p.method] || {});
      }
      if (msg.push) return this._onPush(msg.push);
      if (Object.keys(msg).length === 0 && this._pong) this._send({}); // ping {} -> pong {}
    }
    _onTransportClose(t, { code, reason }) {
      if (t !== this._t) return;
      this._t = null;
      this._clear('connect');
      this._log(t.name, 'closed:', code, reason);
      if (isServerCode(code)) return this._onServerDisconnect(code, reason);
      if (this.state === 'connecting') return this._tryNext(); // did not work: fall to the next transport
      if (this.state === 'connected') this._lost(code, reason);
    }
    // Closes the current transport as failed (no ping, a timeout).
    _dropTransport(reason) {
      const t = this._t;
      if (!t) return;
      t.close();
      this._onTransportClose(t, { code: 0, reason });
    }
    _onConnectReply(t, msg) {
      this._clear('connect');
      this._connectId = 0;
      if (msg.error) return this._onConnectError(t, msg.error);
      const r = msg.connect || {};
      this._preferred = t.name;
      this._attempts = 0;
      this.client = r.client || null;
      this._pong = !!r.pong;
      t.connected(r);
      // Polling transports see failures through their requests; the others watch pings.
      this._pingMs = r.ping && (t.name === 'websocket' || t.name === 'sse') ? (r.ping + 10) * 1000 : 0;
      if (this._pingMs) this._armPing();
      if (r.expires) this._timer('refresh', refreshDelay(r.ttl), () => this._refresh());
      this.state = 'connected'; // subscribe before telling anyone, so that no subscribe goes twice
      for (const sub of this._subs.values()) sub._subscribe();
      for (const p of this._pending.values()) {
        if (p.sent) continue; // commands made while connecting
        p.sent = true;
        this._send(p.cmd);
      }
      this._setState('connected', 0, '', true);
      this._attention.connected();
      this._flushAcks();
      // Server-side subscriptions (token `channels`): recovered through connect `subs`.
      const subs = r.subs || {};
      for (const channel of [...this._serverSubs.keys()]) {
        if (channel in subs) continue;
        this._serverSubs.delete(channel);
        this._emit('unsubscribed', { channel, code: 0, reason: 'not in connect reply' });
      }
      for (const channel of Object.keys(subs)) this._onServerSubscribe(channel, subs[channel], false);
    }
    _onConnectError(t, err) {
      t.close();
      this._t = null;
      this._emit('error', { type: 'connect', error: replyError(err) });
      if (err.code === 109) {
        // The token expired: get a new one, if we can.
        this._token = '';
        return this._opts.getToken ? this._scheduleReconnect() : this._disconnect(109, err.message);
      }
      if (err.temporary) return this._scheduleReconnect();
      this._disconnect(err.code, err.message);
    }
    _onServerDisconnect(code, reason) {
      if (this._t) this._t.close();
      this._t = null;
      if (mayReconnect(code)) this._lost(code, reason);
      else this._disconnect(code, reason);
    }
    // The network went away (window `offline`): drop the transport now and say so, with
    // the state event's code OFFLINE; reconnect attempts go on with their backoff (the
    // browser may be wrong), and the `online` event cuts the wait short.
    _onOffline() {
      if (this.state === 'disconnected') return;
      this._log('the browser went offline');
      this._cycle++; // a getToken in flight belongs to the attempt that ends here
      this._clear('reconnect');
      this._teardown(new PushgateError(ERRORS.TRANSPORT_CLOSED, 'connection closed'), false);
      this._setState('connecting', ERRORS.OFFLINE, 'offline', true);
      this._scheduleReconnect();
    }
    // The network is back (window `online`): reconnect now, with recovery, skipping the
    // backoff. A connection that is up, or that the app stopped, is left alone.
    _onOnline() {
      if (this.state !== 'connecting') return;
      this._log('the browser is online again: reconnecting now');
      this._cycle++;
      this._clear('reconnect');
      if (this._t) { this._t.close(); this._t = null; } // an attempt made while offline
      this._clear('connect');
      this._attempts = 0;
      this._startConnecting();
    }
    // The connection is gone but should come back: reconnect after a backoff.
    _lost(code, reason) {
      this._teardown(new PushgateError(ERRORS.TRANSPORT_CLOSED, 'connection closed'), false);
      this._setState('connecting', code, reason);
      this._scheduleReconnect();
    }
    _disconnect(code, reason) {
      this._cycle++;
      this._clear('reconnect');
      this._teardown(new PushgateError(ERRORS.DISCONNECTED, 'client disconnected'), true);
      this.transport = null;
      this._setState('disconnected', code, reason);
    }
    // Closes the transport, stops timers, rejects commands in flight (`all`: queued ones too).
    _teardown(err, all) {
      if (this._t) this._t.close();
      this._t = null;
      for (const name of ['connect', 'ping', 'refresh']) this._clear(name);
      this._connectId = 0;
      this._outbox = [];
      for (const [id, p] of this._pending) {
        if (!all && !p.sent) continue;
        this._pending.delete(id);
        clearTimeout(p.timer);
        p.done(err);
      }
      for (const sub of this._subs.values()) {
        sub._suspend();
        if (all) sub._settle(err);
      }
    }
    _setState(state, code, reason, force) {
      if (this.state === state && !force) return;
      this.state = state;
      this._emit('state', { state, transport: this.transport, code: code || 0, reason: reason || '' });
    }

    // --- pushes ---
    _onPush(push) {
      const channel = push.channel;
      if (push.disconnect) return this._onServerDisconnect(push.disconnect.code, push.disconnect.reason);
      if (push.message) {
        const data = push.message.data;
        if (data && typeof data === 'object' && data.pushgate) return this._onPushgateMessage(data);
        return this._emit('message', { data });
      }
      if (push.refresh) {
        if (push.refresh.expires) this._timer('refresh', refreshDelay(push.refresh.ttl), () => this._refresh());
        else this._clear('refresh');
        return;
      }
      if (!channel) return;
      const sub = this._subs.get(channel);
      if (sub) return sub._onPush(push);
      // No client-side subscription: a server-side one.
      if (push.subscribe) return this._onServerSubscribe(channel, push.subscribe, true);
      if (push.unsubscribe) {
        const { code, reason } = push.unsubscribe;
        // 2500+: the server wants a resubscribe; server-side subscriptions are renewed
        // (and recovered) by reconnecting with connect `subs`.
        if (code >= 2500 && this._serverSubs.has(channel)) return this._dropTransport('resubscribe ' + channel);
        this._serverSubs.delete(channel);
        return this._emit('unsubscribed', { channel, code, reason });
      }
      if (push.pub) {
        if (!this._serverSubs.has(channel)) this._serverSubs.set(channel, new Position());
        if (this._serverSubs.get(channel).check(push.pub, false) === 'dup') return this._log('dropped duplicate', channel, push.pub.offset);
        this._emit('publication', pubContext(channel, push.pub));
        return this._delivered(channel, push.pub, this._serverSubs.get(channel).epoch);
      }
      if (push.join) this._emit('join', { channel, info: push.join.info });
      if (push.leave) this._emit('leave', { channel, info: push.leave.info });
    }
    _onServerSubscribe(channel, result, pubsFollow) {
      if (!this._serverSubs.has(channel)) this._serverSubs.set(channel, new Position());
      const { recovered, wasRecovering, pubs } = this._serverSubs.get(channel).apply(result, pubsFollow);
      this._emit('subscribed', { channel, recovered, wasRecovering, data: result.data });
      for (const pub of pubs) {
        this._emit('publication', pubContext(channel, pub));
        this._delivered(channel, pub, this._serverSubs.get(channel).epoch);
      }
    }

    // --- pushgate's own RPCs: attention, acknowledgements, read positions ---
    // (the `pushgate.*` methods; see docs/presence-and-events.md)
    // The page shows a notification (e.g. one it loaded from its backend): acknowledge it,
    // as soon as the page is visible, so that it is not handed off to e-mail or mobile push.
    ack(channel, offset, epoch) {
      this._acks.push({ channel, offset, epoch: epoch || '' });
      this._flushAcks();
    }
    // The user has read `channel` up to `offset` (of stream `epoch`): every connection of
    // the user gets a `read` event, this one included.
    markRead(channel, offset, epoch) {
      return this._rpc('pushgate.mark_read', { channel, offset, epoch: epoch || '' }).then(() => {});
    }
    // {offset, epoch} the user has read `channel` up to, or null (known once connected).
    readPosition(channel) { return this._reads.get(channel) || null; }
    // 'active', 'idle' or 'hidden': what this page tells pushgate of its user.
    get attention() { return this._attention.state; }
    _rpc(method, data) { return this._call('rpc', { method, data }); }
    // A publication reached the app: acknowledge it if it asks (tag `pushgate.ack`).
    _delivered(channel, pub, epoch) {
      if (!pub.offset || !pub.tags || !pub.tags['pushgate.ack'] || this._opts.ackOn === 'manual') return;
      this.ack(channel, pub.offset, epoch);
    }
    // A notification counts as seen once the page shows it (ackOn 'receive': at once).
    _flushAcks() {
      if (this.state !== 'connected' || !this._acks.length) return;
      if (this._opts.ackOn !== 'receive' && typeof document !== 'undefined' && document.hidden) return;
      for (const ack of this._acks.splice(0)) {
        this._rpc('pushgate.ack', ack).catch((err) => { if (isLocal(err)) this._acks.push(ack); });
      }
    }
    _onPushgateMessage(data) {
      if (data.pushgate !== 'read') return;
      for (const [channel, pos] of Object.entries(data.read || {})) {
        this._reads.set(channel, pos);
        this._emit('read', { channel, offset: pos.offset, epoch: pos.epoch });
      }
    }

    // --- commands ---
    // Sends a command; done(error, result) runs when its reply is processed. While
    // connecting, the command waits for the connection; either way it fails after `timeout`.
    _command(method, params, done) {
      if (this.state === 'disconnected') return done(new PushgateError(ERRORS.DISCONNECTED, 'client is disconnected'));
      const id = this._nextId++;
      const p = { method, cmd: { id, [method]: params }, done, sent: false };
      p.timer = setTimeout(() => {
        this._pending.delete(id);
        done(new PushgateError(ERRORS.TIMEOUT, method + ' timed out'));
      }, this._opts.timeout);
      this._pending.set(id, p);
      if (this.state !== 'connected') return; // sent by _onConnectReply
      p.sent = true;
      this._send(p.cmd);
    }
    _call(method, params) {
      return new Promise((resolve, reject) => this._command(method, params, (err, result) => (err ? reject(err) : resolve(result))));
    }
    // Commands sent in the same tick go together (one frame, request or /emulation POST).
    _send(cmd) {
      this._outbox.push(cmd);
      if (this._outbox.length > 1) return;
      Promise.resolve().then(() => {
        const commands = this._outbox;
        this._outbox = [];
        if (commands.length && this._t) this._t.send(commands);
      });
    }
    // Token refresh before expiry: a new token from getToken, sent with `refresh`.
    async _refresh() {
      if (!this._opts.getToken) return this._log('the token expires, and there is no getToken to refresh it');
      try {
        const token = await this._opts.getToken();
        if (this.state !== 'connected') return;
        if (!token) return this._disconnect(ERRORS.UNAUTHORIZED, 'unauthorized');
        this._token = token;
        const r = await this._call('refresh', { token });
        if (r.expires) this._timer('refresh', refreshDelay(r.ttl), () => this._refresh());
      } catch (err) {
        if (isLocal(err) || this.state !== 'connected') return;
        this._emit('error', { type: 'refresh', error: err });
        this._timer('refresh', this._backoff(3), () => this._refresh()); // try again soon
      }
    }
    _armPing() { this._timer('ping', this._pingMs, () => this._dropTransport('no ping from server')); }

    // --- helpers ---
    _url(path, websocket) {
      const url = new URL(this._base + path, typeof location !== 'undefined' ? location.href : undefined);
      url.protocol = websocket ? url.protocol.replace('http', 'ws') : url.protocol.replace('ws', 'http');
      return url.toString();
    }
    // Named one-shot timers: reconnect, connect, ping, refresh.
    _timer(name, ms, fn) {
      this._clear(name);
      this._timers[name] = setTimeout(() => { delete this._timers[name]; fn(); }, ms);
    }
    _clear(name) { clearTimeout(this._timers[name]); delete this._timers[name]; }
    _log(...args) { if (this._opts.debug) console.debug('[pushgate]', ...args); }
  }

  Object.assign(Pushgate, { VERSION, errors: ERRORS, PushgateError, Subscription });
  global.Pushgate = Pushgate;
  if (typeof module === 'object' && module && module.exports) module.exports = Pushgate;
})(typeof globalThis !== 'undefined' ? globalThis : this);
