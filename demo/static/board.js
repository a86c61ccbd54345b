// The board page: cards, drag and drop, the bell, online dots — all live through pushgate.js.
// The dots and read positions are pushgate's own: each member's status channel says
// active / idle / hidden / offline (pushgate.js reports this page's attention), and
// opening the bell marks the notifications read with pg.markRead, which every tab hears.
//
// The pattern, in short:
//   1. subscribe to board:<id> and notifications:#<me> first;
//   2. on every onSubscribed with recovered=false, (re)load the state from the backend;
//      with recovered=true, the missed publications simply follow;
//   3. every change goes to the backend — a card move as an RPC through pushgate
//      (pg.rpc('move_card'), answered by the backend's rpc proxy), edits by fetch; the
//      backend saves it with a new version and publishes it; every page, the author's
//      included, applies a card only if its version is newer than the one it has. So all
//      screens end in the server's order.
//   No token anywhere: pushgate's connect proxy asks the backend who the page's cookie is,
//   and its subscribe proxy whether that user is a member of the board.
//   4. a change the backend could not take is undone on screen, said in plain words, and
//      (for a move) made again once the network is back.
'use strict';
(() => {
  const { api, explain, isNetwork, offline, el, emit, avatar, timeAgo, withQuery } = window.demo;
  const boardId = Number(location.pathname.split('/').pop());
  const params = new URLSearchParams(location.search);
  const $ = (id) => document.getElementById(id);

  const state = {
    me: null, users: new Map(), columns: [], members: [],
    cards: new Map(),           // id -> card (with version); tombstones have deleted: true
    statuses: new Map(),        // user -> {status, last_seen}: their status channel (pushgate)
    notifications: new Map(),   // id -> notification (with its offset/epoch in the channel)
    unread: 0,
    acked: new Set(),           // notification ids this page told pushgate it shows
    justRead: new Set(),        // marked read by opening the bell: highlighted until it closes
    dragging: null, renderQueued: false,
    changedBy: new Map(),       // card id -> {user, label}: someone else's change, shown briefly
    loaded: false,              // a board snapshot has been loaded at least once
    moves: new Map(),           // card id -> a move that failed on the network: made again when back
  };
  const CHANGED_BY_MS = 4000;   // how long a teammate's face stays on the card they changed

  // --- the connection ----------------------------------------------------------------------
  const SIGNED_OUT = 4501; // the backend's connect proxy: no user for this cookie

  let pg, boardSub;
  let connection = { state: 'connecting', transport: null, code: 0, ever: false };
  const TRANSPORT_NAMES = { websocket: 'WebSocket', sse: 'Server-sent events', longpoll: 'Long polling', poll: 'Polling' };

  // The badge: Live / Connecting… / Reconnecting… / Offline / Disconnected.
  function renderConnection() {
    const { state: s, transport, code } = connection;
    const how = TRANSPORT_NAMES[transport] || transport || '';
    let look = s, label, hint;
    if (s === 'connected') {
      label = 'Live'; hint = `Live updates via ${how}`;
    } else if (s === 'connecting' && offline()) { // pushgate.js: code Pushgate.errors.OFFLINE
      look = 'offline'; label = 'Offline'; hint = 'No network. The board catches up when you’re back online.';
    } else if (s === 'connecting') {
      label = connection.ever ? 'Reconnecting…' : 'Connecting…'; hint = 'Live updates paused while reconnecting';
    } else {
      label = code === SIGNED_OUT || code === Pushgate.errors.UNAUTHORIZED ? 'Signed out' : 'Disconnected';
      hint = 'Live updates stopped. Reload the page to start them again.';
    }
    $('conn').dataset.state = look;
    $('conn-state').textContent = label;
    $('conn-transport').textContent = s === 'connected' ? how : '';
    $('conn').title = hint;
    $('conn-now').textContent = hint;
  }

  function connect(config) {
    const forced = params.get('transport');
    // no token: the cookie goes with the connection, and the backend says who we are
    const options = { minReconnectDelay: 300 };
    options.idleAfter = Number(params.get('away')) || config.away_after; // amber after this idle
    if (forced) options.transports = forced.split(','); // ?transport=longpoll and friends
    pg = new Pushgate(config.pushgate_url, options);
    pg.on('state', ({ state: s, transport, code }) => {
      connection = { state: s, transport, code, ever: connection.ever || s === 'connected' };
      renderConnection();
      emit('state', { state: s, transport, code });
    });
    // pushgate.js itself reacts to these (drop at once, reconnect at once); the badge
    // follows too, so it never says "live" on a dead network.
    window.addEventListener('offline', renderConnection);
    window.addEventListener('online', renderConnection);

    boardSub = pg.subscribe(`board:${boardId}`, {
      // pushgate asks the backend (subscribe proxy): members of the board only
      onSubscribed: ({ recovered, wasRecovering }) => {
        emit('subscribed', { channel: 'board', recovered, wasRecovering });
        // first time, or a gap pushgate could not fill (or the board never loaded): reload;
        // recovered: the missed publications are delivered right after this call
        const caughtUp = recovered && state.loaded ? Promise.resolve(true) : loadBoard();
        caughtUp.then((ok) => { if (ok) retryMoves(); }); // up to date: make the failed moves now
      },
      onPublication: ({ data, info }) => {
        if (info) return; // published by a browser, not by our backend: not trusted
        onBoardEvent(data);
      },
    });

    // pushgate.js acknowledges each notification once this page shows it: a notification
    // no tab shows within its hand-off TTL is handed back to the backend to e-mail.
    pg.subscribe(notificationChannel(), {
      onSubscribed: ({ recovered, wasRecovering }) => {
        emit('subscribed', { channel: 'notifications', recovered, wasRecovering });
        if (!recovered) loadNotifications();
      },
      onPublication: ({ data, info, offset }) => { if (!info) onNotificationEvent(data, offset); },
    });
    // read positions: marked on any tab (or device), told to every one
    pg.on('read', ({ channel }) => { if (channel === notificationChannel()) loadNotifications(); });
    watchStatuses(config.status_namespace);

    pg.connect();
    // Leave at once when the tab goes (polling transports would otherwise wait for the
    // session timeout); come back if the page is restored from the back/forward cache.
    window.addEventListener('pagehide', () => pg.disconnect());
    window.addEventListener('pageshow', (e) => { if (e.persisted) pg.connect(); });
  }

  // --- board state -----------------------------------------------------------------------------
  async function loadBoard() {
    try {
      const snapshot = await api(`/api/boards/${boardId}`);
      document.title = snapshot.board.name + ' · Teamboard';
      $('board-name').textContent = snapshot.board.name;
      state.members = snapshot.members.map((m) => m.id);
      for (const m of snapshot.members) {
        // until its status channel answers (it then stays up to date by itself)
        if (!state.statuses.has(m.id)) state.statuses.set(m.id, { status: m.status, last_seen: m.last_seen });
      }
      // merge by version: publications that arrived meanwhile are never undone
      for (const card of snapshot.cards) applyCard(card, { quiet: true });
      state.loaded = true;
      emit('board-loaded', { cards: snapshot.cards.length });
      renderMembers();
      fillAssignees();
      return true;
    } catch (error) {
      const later = isNetwork(error) ? ' The board will refresh when the connection is back.' : '';
      toast('Couldn’t load the board. ' + explain(error) + later, 'error');
      return false;
    }
  }

  function applyCard(card, { quiet = false, actor = null } = {}) {
    const have = state.cards.get(card.id);
    if (have && have.version >= card.version) return false; // old news
    state.cards.set(card.id, card);
    if (!quiet && actor && actor !== state.me.id) changedBy(card, have, actor);
    emit('card', { id: card.id, column: card.column, version: card.version, deleted: card.deleted, title: card.title, assignee: card.assignee });
    scheduleRender();
    return true;
  }

  // Someone else changed a card: their face on it for a few seconds, and the same words
  // for screen readers (the #announcer live region).
  function changedBy(card, have, actor) {
    const user = state.users.get(actor);
    if (!user) return;
    let what;
    if (card.deleted) what = 'deleted';
    else if (!have || have.deleted) what = 'added';
    else if (have.column !== card.column) what = 'moved';
    else what = 'edited';
    const where = what === 'moved' || what === 'added' ? ' to ' + columnTitle(card.column) : '';
    if (what !== 'deleted') state.changedBy.set(card.id, { user, label: `${user.name} ${what} this card${where}` });
    $('announcer').textContent = `${user.name} ${what} “${card.title}”${where}`;
  }

  function onBoardEvent(data) {
    if (data.type === 'card') applyCard(data.card, { actor: data.actor });
  }

  // --- online dots: the members' status channels ------------------------------------------
  // pushgate publishes each change of a user's status to status:<user> (active, idle,
  // hidden, offline — an offline only after a short grace, so a reload is not one) and
  // answers the subscribe with the current one.
  function watchStatuses(namespace) {
    for (const id of state.members) {
      const apply = (data) => {
        if (!data || data.user !== id) return;
        state.statuses.set(id, { status: data.status, last_seen: data.last_seen });
        renderMembers();
      };
      pg.subscribe(`${namespace}:${id}`, {
        onSubscribed: ({ data }) => apply(data),
        onPublication: ({ data }) => apply(data),
      });
    }
  }
  function isOnline(user) { const s = state.statuses.get(user); return !!s && s.status !== 'offline'; }

  // the dot: green while active, amber while idle or hidden, grey when offline
  function statusOf(user) {
    const s = state.statuses.get(user);
    if (!s || s.status === 'offline') return 'offline';
    return s.status === 'active' ? 'online' : 'away';
  }

  function renderMembers() {
    if (!state.me) return;
    const online = state.members.filter(isOnline);
    const nodes = state.members.map((id) => {
      const user = state.users.get(id);
      const status = statusOf(id);
      const seen = (state.statuses.get(id) || {}).last_seen;
      const label = status === 'offline' ? (seen ? 'offline · seen ' + timeAgo(seen) : 'offline') : status;
      const a = avatar(user, 'member status-' + status);
      a.dataset.status = status;
      a.title = `${user.name}${id === state.me.id ? ' (you)' : ''} — ${label}`;
      a.append(el('i', { class: 'presence-dot' }));
      return a;
    });
    $('members').replaceChildren(...nodes);
    $('members').dataset.online = online.join(',');
    emit('presence', { online, away: state.members.filter((id) => statusOf(id) === 'away') });
  }

  // --- rendering the board -------------------------------------------------------------------
  function scheduleRender() {
    if (state.renderQueued) return;
    state.renderQueued = true;
    requestAnimationFrame(() => { state.renderQueued = false; if (!state.dragging) render(); });
  }

  function sortedCards(column) {
    return [...state.cards.values()]
      .filter((c) => !c.deleted && c.column === column)
      .sort((a, b) => a.position - b.position || a.id - b.id);
  }

  function cardBody(card) {
    const assignee = card.assignee && state.users.get(card.assignee);
    return [
      el('div', { class: 'card-title' }, withMentions(card.title)),
      card.description ? el('div', { class: 'card-desc' }, withMentions(card.description)) : null,
      el('div', { class: 'card-foot' },
        el('span', { class: 'card-id' }, '#' + card.id),
        el('span', { class: 'spacer' }),
        el('button', { type: 'button', class: 'icon-btn move-btn', title: 'Move or edit', 'aria-label': 'Move or edit card', onclick: (e) => { e.stopPropagation(); openCard(card.id); } }, '⋯'),
        assignee ? avatar(assignee, 'small') : el('span', { class: 'avatar small empty', title: 'Unassigned' }, '?')),
    ];
  }

  function withMentions(text) {
    const parts = text.split(/(@[A-Za-z][A-Za-z0-9_.-]*)/);
    return parts.map((p, i) => (i % 2 ? el('span', { class: 'mention' }, p) : p));
  }

  const cardNodes = new Map(); // id -> {node, version}
  function cardNode(card) {
    let entry = cardNodes.get(card.id);
    if (!entry) {
      const node = el('li', {
        class: 'card', draggable: 'true', tabindex: '0', dataset: { id: card.id },
        onclick: () => openCard(card.id),
        onkeydown: (e) => onCardKey(e, card.id),
        ondragstart: (e) => onDragStart(e, card.id),
        ondragend: onDragEnd,
      });
      entry = { node, version: -1 };
      cardNodes.set(card.id, entry);
    }
    if (entry.version !== card.version) {
      entry.node.replaceChildren(...cardBody(card).filter(Boolean));
      entry.node.dataset.version = card.version;
      entry.node.dataset.column = card.column;
      entry.node.setAttribute('aria-label', `${card.title}, in ${columnTitle(card.column)}`);
      entry.version = card.version;
    }
    return entry.node;
  }

  function columnTitle(id) { return (state.columns.find((c) => c.id === id) || {}).title || id; }

  function buildColumns() {
    // The whole column (its full height) takes drops, not only the cards in it.
    $('columns').replaceChildren(...state.columns.map((col) => el('section', {
      class: 'column', dataset: { column: col.id }, 'aria-label': col.title,
      ondragover: (e) => onDragOver(e, col.id), ondragleave: onDragLeave, ondrop: (e) => onDrop(e, col.id),
    },
    el('header', { class: 'column-head' }, el('h2', {}, col.title), el('span', { class: 'column-count' }, '0')),
    el('div', { class: 'column-body' },
      el('ol', { class: 'cards', dataset: { column: col.id } }),
      addForm(col.id)))));
  }

  function render() {
    const focused = document.activeElement && document.activeElement.classList.contains('card') ? document.activeElement.dataset.id : null;
    let total = 0;
    for (const col of state.columns) {
      const list = document.querySelector(`.cards[data-column="${col.id}"]`);
      const cards = sortedCards(col.id);
      total += cards.length;
      const nodes = cards.map(cardNode);
      // reorder in place (existing nodes are moved, not rebuilt)
      nodes.forEach((node, i) => { if (list.children[i] !== node) list.insertBefore(node, list.children[i] || null); });
      while (list.children.length > nodes.length) list.lastElementChild.remove();
      list.closest('.column').querySelector('.column-count').textContent = cards.length;
    }
    for (const [id, entry] of cardNodes) {
      const card = state.cards.get(id);
      if (!card || card.deleted) { entry.node.remove(); cardNodes.delete(id); }
    }
    for (const [id, { user, label }] of state.changedBy) {
      const entry = cardNodes.get(id);
      if (entry) showChangedBy(entry.node, user, label);
    }
    state.changedBy.clear();
    if (focused && cardNodes.get(Number(focused))) cardNodes.get(Number(focused)).node.focus({ preventScroll: true });
    $('board-summary').textContent = `${total} cards`;
  }

  function showChangedBy(node, user, label) {
    for (const old of node.querySelectorAll('.card-actor')) old.remove();
    const face = avatar(user, 'small card-actor');
    face.setAttribute('role', 'img');
    face.setAttribute('aria-label', label);
    face.title = label;
    node.append(face);
    node.style.setProperty('--actor', user.color);
    node.classList.remove('flash'); void node.offsetWidth; node.classList.add('flash');
    setTimeout(() => { face.classList.add('leaving'); }, CHANGED_BY_MS - 400);
    setTimeout(() => { face.remove(); }, CHANGED_BY_MS);
  }

  function addForm(column) {
    const input = el('textarea', { class: 'add-input', rows: 2, placeholder: 'What needs doing? @mention someone', maxLength: 200 });
    const form = el('form', { class: 'add-form', hidden: true },
      input,
      el('div', { class: 'add-actions' },
        el('button', { type: 'submit', class: 'btn primary small' }, 'Add card'),
        el('button', { type: 'button', class: 'btn small', onclick: () => { form.hidden = true; opener.hidden = false; } }, 'Cancel')));
    const opener = el('button', { type: 'button', class: 'add-card', onclick: () => { form.hidden = false; opener.hidden = true; input.focus(); } }, '+ Add a card');
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const title = input.value.trim();
      if (!title) return;
      input.value = '';
      try {
        const { card } = await api(`/api/boards/${boardId}/cards`, { method: 'POST', body: { title, column } });
        applyCard(card);
      } catch (error) {
        if (!input.value) input.value = title; // nothing typed is lost
        toast('Couldn’t add the card. ' + explain(error) + ' Your text is still there.', 'error');
      }
      input.focus();
    });
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
      if (e.key === 'Escape') { form.hidden = true; opener.hidden = false; }
    });
    return el('div', { class: 'add-wrap' }, opener, form);
  }

  // --- moving cards: drag and drop, keyboard, dialog -------------------------------------------------
  // The page moves the card at once (same version), then the backend's answer — and its
  // publication — carry the new version, which wins over anything older. If the backend
  // cannot take the move, the card goes back where it was (unless something newer came
  // meanwhile); a move lost to the network is made again once the board is back in sync,
  // one the server failed is offered again in the message.
  async function moveCard(id, column, before, { retry = false } = {}) {
    const card = state.cards.get(id);
    if (!card || card.deleted) return;
    if (card.column === column) { // dropped where it already is: nothing to do
      const list = sortedCards(column);
      const next = list[list.findIndex((c) => c.id === id) + 1];
      if ((next ? next.id : null) === (before == null ? null : before)) return;
    }
    const base = card.moving ? card.base : card; // the last state the backend confirmed
    const peers = sortedCards(column).filter((c) => c.id !== id);
    let at = before == null ? peers.length : peers.findIndex((c) => c.id === before);
    if (at < 0) at = peers.length;
    const prev = peers[at - 1], next = peers[at];
    const position = next ? (prev ? (prev.position + next.position) / 2 : next.position - 1) : (prev ? prev.position + 1 : 1);
    const moving = { ...card, column, position, moving: true, base };
    state.cards.set(id, moving);
    state.moves.delete(id);
    scheduleRender();
    try {
      const { card: saved } = await moveOnServer(id, column, next ? next.id : null);
      applyCard(saved);
    } catch (error) {
      if (state.cards.get(id) === moving) state.cards.set(id, base); // put it back
      scheduleRender();
      const to = columnTitle(column), from = columnTitle(base.column), title = `“${base.title}”`;
      let retryBy = null;
      if (isNetwork(error)) {
        retryBy = 'reconnect';
        state.moves.set(id, { column, before: next ? next.id : null, version: base.version });
        toast(offline()
          ? `You’re offline. ${title} stays in ${from} for now and moves to ${to} when you’re back online.`
          : `Teamboard can’t be reached. ${title} stays in ${from} for now and moves to ${to} when the connection is back.`, 'error');
      } else if (error.status >= 500) {
        retryBy = 'button';
        toast(`${title} couldn’t be moved to ${to}: something went wrong on our side. It’s back in ${from}.`, 'error', null,
          { label: 'Try again', run: () => moveCard(id, column, next ? next.id : null, { retry: true }) });
      } else {
        toast(`${title} couldn’t be moved. ${explain(error)}`, 'error');
      }
      emit('move-failed', { id, column, status: error.status, retry: retryBy, again: retry });
    }
  }

  // A move is a client RPC: pushgate hands it to the backend (its rpc proxy), which saves
  // it, publishes it to the board and answers with the card. Errors look like api()'s: a
  // `status` (0: no answer, worth trying again; else the backend's code, HTTP-like).
  async function moveOnServer(id, column, before) {
    if (!pg || pg.state !== 'connected') throw Object.assign(new Error('not connected'), { status: 0 });
    try {
      return (await pg.rpc('move_card', { id, column, before })).data;
    } catch (cause) {
      const code = cause && cause.code;
      // pushgate.js's own codes (timeout, closed…): the network; a temporary error
      // (pushgate could not reach the backend): our side, worth trying again
      const status = !code || code < 100 ? 0 : cause.temporary ? 503 : code;
      throw Object.assign(new Error((cause && cause.message) || 'move failed'), { status, cause });
    }
  }

  // Back online and in sync: make the moves the network lost, unless someone changed
  // those cards meanwhile (then their change stands, and we say so).
  function retryMoves() {
    const moves = [...state.moves];
    state.moves.clear();
    for (const [id, move] of moves) {
      const card = state.cards.get(id);
      if (!card || card.deleted) continue;
      if (card.version !== move.version) {
        if (card.updated_by === state.me.id) continue; // ours after all (the answer was lost) or our other tab's
        const by = card.updated_by && state.users.get(card.updated_by);
        toast(`${by ? by.name : 'Someone'} changed “${card.title}” while you were offline, so your move was not made.`, 'notice', by && by.id);
        continue;
      }
      moveCard(id, move.column, move.before, { retry: true });
    }
  }

  function onDragStart(e, id) {
    state.dragging = id;
    e.dataTransfer.effectAllowed = 'move';
    e.dataTransfer.setData('text/plain', String(id));
    requestAnimationFrame(() => { const n = cardNodes.get(id); if (n) n.node.classList.add('dragging'); });
  }
  function onDragEnd() {
    const entry = cardNodes.get(state.dragging);
    if (entry) entry.node.classList.remove('dragging');
    state.dragging = null;
    clearDropMarks();
    scheduleRender();
  }
  function dropTarget(list, y) {
    // the first card whose middle is below the pointer: drop before it
    for (const node of list.querySelectorAll('.card:not(.dragging)')) {
      const box = node.getBoundingClientRect();
      if (y < box.top + box.height / 2) return node;
    }
    return null;
  }
  function clearDropMarks() {
    document.querySelectorAll('.drop-before, .drop-end').forEach((n) => n.classList.remove('drop-before', 'drop-end'));
  }
  function onDragOver(e, column) {
    if (state.dragging == null) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = 'move';
    clearDropMarks();
    const list = e.currentTarget.querySelector('.cards');
    const target = dropTarget(list, e.clientY);
    if (target) target.classList.add('drop-before'); else list.classList.add('drop-end');
  }
  function onDragLeave(e) { if (!e.currentTarget.contains(e.relatedTarget)) clearDropMarks(); }
  function onDrop(e, column) {
    e.preventDefault();
    const id = Number(e.dataTransfer.getData('text/plain')) || state.dragging;
    const target = dropTarget(e.currentTarget.querySelector('.cards'), e.clientY);
    clearDropMarks();
    const entry = cardNodes.get(state.dragging);
    if (entry) entry.node.classList.remove('dragging');
    state.dragging = null;
    if (id) moveCard(id, column, target ? Number(target.dataset.id) : null);
  }

  // Keyboard: Enter opens, Alt+←/→ moves between columns, Alt+↑/↓ reorders.
  function onCardKey(e, id) {
    const card = state.cards.get(id);
    if (e.key === 'Enter') { e.preventDefault(); openCard(id); return; }
    if (!e.altKey || !card) return;
    const cols = state.columns.map((c) => c.id);
    const i = cols.indexOf(card.column);
    if (e.key === 'ArrowRight' && i < cols.length - 1) moveCard(id, cols[i + 1], null);
    else if (e.key === 'ArrowLeft' && i > 0) moveCard(id, cols[i - 1], null);
    else if (e.key === 'ArrowUp' || e.key === 'ArrowDown') {
      const list = sortedCards(card.column);
      const at = list.findIndex((c) => c.id === id);
      if (e.key === 'ArrowUp' && at > 0) moveCard(id, card.column, list[at - 1].id);
      else if (e.key === 'ArrowDown' && at < list.length - 1) moveCard(id, card.column, list[at + 2] ? list[at + 2].id : null);
      else return;
    } else return;
    e.preventDefault();
  }

  // --- the card dialog (edit, assign, “Move to” for touch screens) ----------------------------------------
  let editing = null;
  function fillAssignees() {
    $('f-assignee').replaceChildren(el('option', { value: '' }, 'Nobody'),
      ...state.members.map((id) => el('option', { value: id }, state.users.get(id).name)));
    $('f-column').replaceChildren(...state.columns.map((c) => el('option', { value: c.id }, c.title)));
  }
  function openCard(id) {
    const card = state.cards.get(id);
    if (!card) return;
    editing = id;
    $('dialog-title').textContent = 'Card #' + id;
    const by = card.updated_by && state.users.get(card.updated_by);
    $('dialog-meta').textContent = card.updated_at
      ? `Updated ${timeAgo(card.updated_at)}` + (by ? ` by ${by.name.split(' ')[0]}` : '') : '';
    setDialogBusy(false);
    $('f-title').value = card.title;
    $('f-description').value = card.description;
    $('f-assignee').value = card.assignee || '';
    $('f-column').value = card.column;
    $('card-dialog').showModal();
  }
  function closeDialog() { editing = null; $('card-dialog').close(); }
  // While saving, the dialog stays open; a failure is said there, the edits kept (or in a
  // message, if the dialog was closed or shows another card by then).
  function dialogFailed(id, problem) {
    if (editing === id && $('card-dialog').open) setDialogBusy(false, problem);
    else toast(problem, 'error');
  }
  function setDialogBusy(busy, problem) {
    for (const id of ['f-save', 'f-delete', 'f-cancel']) $(id).disabled = busy;
    $('f-save').textContent = busy ? 'Saving…' : 'Save';
    $('dialog-error').textContent = problem || '';
    $('dialog-error').hidden = !problem;
  }

  function setupDialog() {
    $('f-cancel').addEventListener('click', closeDialog);
    $('card-dialog').addEventListener('close', () => { editing = null; }); // Escape closes it too
    $('card-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const id = editing;
      const card = state.cards.get(id);
      if (!card) return closeDialog();
      const changes = {};
      const title = $('f-title').value.trim(), description = $('f-description').value.trim();
      const assignee = $('f-assignee').value || null, column = $('f-column').value;
      if (title && title !== card.title) changes.title = title;
      if (description !== card.description) changes.description = description;
      if (assignee !== (card.assignee || null)) changes.assignee = assignee;
      if (column !== card.column) { changes.column = column; changes.before = null; }
      if (!Object.keys(changes).length) return closeDialog();
      if (Object.keys(changes).join() === 'column,before') { // “Move to” alone: a move like a drag
        closeDialog();
        return moveCard(id, column, null);
      }
      setDialogBusy(true);
      try {
        const { card: saved } = await api(`/api/cards/${id}`, { method: 'PATCH', body: changes });
        applyCard(saved);
        if (editing === id) closeDialog();
      } catch (error) {
        dialogFailed(id, `Your changes to “${card.title}” are not saved. ` + explain(error) + (isNetwork(error) ? ' Try again when you’re back online.' : ''));
      }
    });
    $('f-delete').addEventListener('click', async () => {
      const id = editing;
      const card = state.cards.get(id);
      setDialogBusy(true);
      try {
        applyCard((await api(`/api/cards/${id}`, { method: 'DELETE' })).card);
        if (editing === id) closeDialog();
      } catch (error) { dialogFailed(id, `“${card ? card.title : 'The card'}” is not deleted. ` + explain(error)); }
    });
  }

  // --- the bell ---------------------------------------------------------------------------------
  function notificationChannel() { return `notifications:#${state.me.id}`; }
  async function loadNotifications() {
    try {
      // the stored list, each marked read by pushgate's read position: the truth
      const { items } = await api('/api/notifications');
      const loaded = new Map(items.map((n) => [n.id, n]));
      const newest = items.length ? items[0].id : 0;
      // a notification that came while the list was on its way stays
      for (const [id, n] of state.notifications) if (id > newest) loaded.set(id, n);
      state.notifications = loaded;
      countUnread();
      renderNotifications();
      // this page shows them (the bell's count): none of them needs handing off to e-mail
      for (const n of items) {
        if (n.read || !n.offset || state.acked.has(n.id)) continue;
        state.acked.add(n.id);
        pg.ack(notificationChannel(), n.offset, n.epoch);
      }
    } catch (error) { toast('Couldn’t load your notifications. ' + explain(error), 'error'); }
  }
  function countUnread() {
    let unread = 0;
    for (const n of state.notifications.values()) if (!n.read) unread++;
    state.unread = unread;
    const badge = $('bell-count');
    badge.textContent = unread > 99 ? '99+' : String(unread);
    badge.hidden = unread === 0;
    $('bell').dataset.unread = unread;
    $('bell').setAttribute('aria-label', `Notifications, ${unread} unread`);
    emit('bell', { unread });
  }
  function onNotificationEvent(data, offset) {
    if (data.type !== 'notification') return;
    const known = state.notifications.get(data.notification.id);
    state.notifications.set(data.notification.id, { ...data.notification, offset, read: known ? known.read : false });
    countUnread();
    renderNotifications();
    if (!known) {
      toast(data.notification.text, 'notice', data.notification.actor);
      const bell = $('bell');
      bell.classList.remove('ring'); void bell.offsetWidth; bell.classList.add('ring');
    }
  }
  function renderNotifications() {
    const items = [...state.notifications.values()].sort((a, b) => b.id - a.id).slice(0, 30);
    const fresh = state.unread || state.justRead.size;
    $('bell-summary').textContent = fresh ? `${fresh} new` : 'all read';
    $('notifications').replaceChildren(...(items.length ? items.map((n) => {
      const actor = state.users.get(n.actor);
      const fresh = !n.read || state.justRead.has(n.id); // read on opening: still shown as new
      return el('li', { class: 'notification' + (fresh ? ' unread' : ''), dataset: { id: n.id },
        onclick: () => { if (n.board_id === boardId) { togglePanel('bell-panel', false); openCard(n.card_id); } else location.href = withQuery(`/demo/board/${n.board_id}`); } },
      actor ? avatar(actor, 'small') : null,
      el('div', {}, el('div', { class: 'n-text' }, n.text), el('div', { class: 'muted small' }, timeAgo(n.created_at))));
    }) : [el('li', { class: 'empty-note' }, 'Nothing yet. When someone assigns you a card or writes @' + state.me.id + ', it shows up here.')]));
  }
  // Opening the bell reads everything up to the newest notification: its position in the
  // channel goes to pushgate (pg.markRead), which tells every tab of ours, this one too.
  async function openBell() {
    await loadNotifications(); // the stored list: the truth, whatever this tab missed
    if (state.unread === 0) return;
    const newest = [...state.notifications.values()].filter((n) => n.offset).sort((a, b) => b.id - a.id)[0];
    if (!newest) return;
    for (const n of state.notifications.values()) if (!n.read) state.justRead.add(n.id);
    try {
      await pg.markRead(notificationChannel(), newest.offset, newest.epoch || '');
    } catch (error) { toast('Couldn’t mark your notifications read. ' + explain(error), 'error'); }
  }

  // --- small things ---------------------------------------------------------------------------------
  // A message at the bottom; the same one twice shows once. `action`: {label, run}, a button.
  function toast(text, kind, actorId, action) {
    for (const shown of $('toasts').children) if (shown.dataset.text === text) return;
    const actor = actorId && state.users.get(actorId);
    const node = el('div', { class: 'toast ' + (kind || ''), dataset: { text } },
      actor ? avatar(actor, 'small') : null, el('span', { class: 'toast-text' }, text),
      action ? el('button', { type: 'button', class: 'toast-action', onclick: () => { node.remove(); action.run(); } }, action.label) : null);
    $('toasts').append(node);
    const stay = action ? 10000 : 5000;
    setTimeout(() => node.classList.add('leaving'), stay);
    setTimeout(() => node.remove(), stay + 400);
  }

  function closeMenus(except) {
    for (const menu of document.querySelectorAll('.menu')) {
      if (menu === except || menu.hidden) continue;
      menu.hidden = true;
      if (menu.id === 'bell-panel' && state.justRead.size) { state.justRead.clear(); renderNotifications(); }
    }
  }

  function togglePanel(id, open) {
    const panel = $(id);
    const show = open === undefined ? panel.hidden : open;
    closeMenus(null);
    panel.hidden = !show;
    return show;
  }

  function setupHeader(me) {
    const user = state.users.get(me.user);
    const meButton = $('me');
    meButton.replaceChildren(window.demo.initials(user.name));
    meButton.style.background = user.color;
    meButton.title = user.name;
    $('me-name').textContent = user.name;
    $('board-tabs').replaceChildren(...me.boards.map((b) => el('a', {
      class: 'board-tab' + (b.id === boardId ? ' current' : ''), href: withQuery(`/demo/board/${b.id}`),
    }, b.name)));
    const forced = params.get('transport');
    $('transport-links').replaceChildren(...[['', 'Automatic'], ['websocket', 'WebSocket'], ['sse', 'Server-sent events'], ['longpoll', 'Long polling'], ['poll', 'Polling']].map(([t, label]) => {
      const q = new URLSearchParams(location.search);
      if (t) q.set('transport', t); else q.delete('transport');
      return el('a', { class: 'menu-item' + ((forced || '') === t ? ' current' : ''), href: location.pathname + (q.toString() ? '?' + q : '') }, label || t);
    }));
    $('conn').addEventListener('click', (e) => { e.stopPropagation(); togglePanel('conn-menu'); });
    meButton.addEventListener('click', (e) => { e.stopPropagation(); togglePanel('me-menu'); });
    $('bell').addEventListener('click', (e) => { e.stopPropagation(); if (togglePanel('bell-panel')) openBell(); });
    for (const menu of document.querySelectorAll('.menu')) menu.addEventListener('click', (e) => e.stopPropagation());
    document.addEventListener('click', () => closeMenus(null));
    document.addEventListener('keydown', (e) => { if (e.key === 'Escape') closeMenus(null); });
  }

  // --- start --------------------------------------------------------------------------------------
  async function main() {
    const me = await api('/api/me');
    if (!me.user) { location.href = withQuery('/demo/'); return; }
    if (!me.boards.some((b) => b.id === boardId)) { location.href = withQuery('/demo/'); return; }
    for (const u of me.users) state.users.set(u.id, u);
    state.me = state.users.get(me.user);
    state.columns = me.config.columns;
    state.members = me.boards.find((b) => b.id === boardId).members;
    setupHeader(me);
    setupDialog();
    buildColumns();
    fillAssignees();
    renderMembers();
    loadBoard();       // draw at once; merged by version with what the subscription brings
    connect(me.config);
    window.board = { state, pg: () => pg, moveCard, openCard };
  }
  main();
})();
