// The board page: cards, drag and drop, the bell, online dots — all live through pushgate.js.
//
// The pattern, in short:
//   1. subscribe to board:<id> and notifications:#<me> first;
//   2. on every onSubscribed with recovered=false, (re)load the state from the backend;
//      with recovered=true, the missed publications simply follow;
//   3. every change goes to the backend (fetch); the backend saves it with a new version
//      and publishes it; every page, the author's included, applies a card only if its
//      version is newer than the one it has. So all screens end in the server's order.
'use strict';
(() => {
  const { api, el, emit, avatar, timeAgo, withQuery } = window.demo;
  const boardId = Number(location.pathname.split('/').pop());
  const params = new URLSearchParams(location.search);
  const $ = (id) => document.getElementById(id);

  const state = {
    me: null, users: new Map(), columns: [], members: [],
    cards: new Map(),           // id -> card (with version); tombstones have deleted: true
    clients: new Map(),         // pushgate client id -> user, from presence + join/leave
    away: new Set(), lastSeen: new Map(),
    notifications: new Map(),   // id -> notification
    unread: 0, stamp: -1,       // stamp: the backend's counter, newer wins
    justRead: new Set(),        // marked read by opening the bell: highlighted until it closes
    dragging: null, renderQueued: false, flash: new Set(),
  };

  // --- the connection ----------------------------------------------------------------------
  async function fetchToken(url) {
    const response = await fetch(url, { credentials: 'same-origin' });
    if (response.status === 401 || response.status === 403) return ''; // not allowed: stop
    if (!response.ok) throw new Error('token: HTTP ' + response.status);   // retried with backoff
    return response.text();
  }

  let pg, boardSub;
  function connect(config) {
    const forced = params.get('transport');
    const options = { getToken: () => fetchToken('/demo/api/token'), minReconnectDelay: 300 };
    if (forced) options.transports = forced.split(','); // ?transport=longpoll and friends
    pg = new Pushgate(config.pushgate_url, options);
    pg.on('state', ({ state: s, transport, code }) => {
      $('conn').dataset.state = s;
      $('conn-state').textContent = s === 'connected' ? 'live' : s;
      $('conn-transport').textContent = transport ? transport : '';
      emit('state', { state: s, transport, code });
      if (s === 'connected') markOnline(state.me.id, pg.client);
      renderMembers();
    });

    boardSub = pg.subscribe(`board:${boardId}`, {
      joinLeave: true,
      // a subscription JWT from the backend: only members of the board get one
      getToken: ({ channel }) => fetchToken('/demo/api/token?channel=' + encodeURIComponent(channel)),
      onSubscribed: ({ recovered, wasRecovering }) => {
        emit('subscribed', { channel: 'board', recovered, wasRecovering });
        if (!recovered) loadBoard();   // first time, or a gap pushgate could not fill
        refreshPresence();             // joins and leaves are not recovered: ask again
      },
      onPublication: ({ data, info }) => {
        if (info) return; // published by a browser, not by our backend: not trusted
        onBoardEvent(data);
      },
      onJoin: ({ info }) => { state.clients.set(info.client, info.user); renderMembers(); },
      onLeave: ({ info }) => {
        state.clients.delete(info.client);
        if (!isOnline(info.user)) state.lastSeen.set(info.user, Date.now() / 1000);
        renderMembers();
      },
    });

    pg.subscribe(`notifications:#${state.me.id}`, {
      onSubscribed: ({ recovered, wasRecovering }) => {
        emit('subscribed', { channel: 'notifications', recovered, wasRecovering });
        if (!recovered) loadNotifications();
      },
      onPublication: ({ data, info }) => { if (!info) onNotificationEvent(data); },
    });

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
        if (m.away) state.away.add(m.id); else state.away.delete(m.id);
        if (m.last_seen && !m.online) state.lastSeen.set(m.id, m.last_seen);
      }
      // merge by version: publications that arrived meanwhile are never undone
      for (const card of snapshot.cards) applyCard(card, { quiet: true });
      emit('board-loaded', { cards: snapshot.cards.length });
      renderMembers();
      fillAssignees();
    } catch (error) {
      toast('Could not load the board: ' + error.message, 'error');
    }
  }

  function applyCard(card, { quiet = false, actor = null } = {}) {
    const have = state.cards.get(card.id);
    if (have && have.version >= card.version) return false; // old news
    state.cards.set(card.id, card);
    if (!quiet && actor && actor !== state.me.id) state.flash.add(card.id);
    emit('card', { id: card.id, column: card.column, version: card.version, deleted: card.deleted, title: card.title, assignee: card.assignee });
    scheduleRender();
    return true;
  }

  function onBoardEvent(data) {
    if (data.type === 'card') applyCard(data.card, { actor: data.actor });
    else if (data.type === 'status') {
      if (data.status === 'away') state.away.add(data.user); else state.away.delete(data.user);
      renderMembers();
    }
  }

  // --- presence ------------------------------------------------------------------------------
  async function refreshPresence() {
    try {
      const { clients } = await boardSub.presence();
      state.clients = new Map(Object.values(clients).map((c) => [c.client, c.user]));
      renderMembers();
    } catch (error) { /* resubscribing: onSubscribed will ask again */ }
  }
  function markOnline(user, client) { if (client) state.clients.set(client, user); }
  function isOnline(user) { for (const u of state.clients.values()) if (u === user) return true; return false; }

  function statusOf(user) {
    if (!isOnline(user)) return 'offline';
    return state.away.has(user) ? 'away' : 'online';
  }

  function renderMembers() {
    if (!state.me) return;
    const online = state.members.filter(isOnline);
    const nodes = state.members.map((id) => {
      const user = state.users.get(id);
      const status = statusOf(id);
      const seen = state.lastSeen.get(id);
      const label = status === 'offline' ? (seen ? 'offline · seen ' + timeAgo(seen) : 'offline') : status;
      const a = avatar(user, 'member status-' + status);
      a.dataset.status = status;
      a.title = `${user.name}${id === state.me.id ? ' (you)' : ''} — ${label}`;
      a.append(el('i', { class: 'presence-dot' }));
      return a;
    });
    $('members').replaceChildren(...nodes);
    $('members').dataset.online = online.join(',');
    emit('presence', { online, away: [...state.away] });
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
    $('columns').replaceChildren(...state.columns.map((col) => el('section', { class: 'column', dataset: { column: col.id } },
      el('header', { class: 'column-head' }, el('h2', {}, col.title), el('span', { class: 'column-count' }, '0')),
      el('ol', {
        class: 'cards', dataset: { column: col.id },
        ondragover: (e) => onDragOver(e, col.id), ondragleave: onDragLeave, ondrop: (e) => onDrop(e, col.id),
      }),
      addForm(col.id))));
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
    for (const id of state.flash) {
      const entry = cardNodes.get(id);
      if (entry) { entry.node.classList.remove('flash'); void entry.node.offsetWidth; entry.node.classList.add('flash'); }
    }
    state.flash.clear();
    if (focused && cardNodes.get(Number(focused))) cardNodes.get(Number(focused)).node.focus({ preventScroll: true });
    $('board-summary').textContent = `${total} cards`;
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
      } catch (error) { toast('Could not add the card: ' + error.message, 'error'); }
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
  // publication — carry the new version, which wins over anything older.
  async function moveCard(id, column, before) {
    const card = state.cards.get(id);
    if (!card || card.deleted) return;
    if (card.column === column) { // dropped where it already is: nothing to do
      const list = sortedCards(column);
      const next = list[list.findIndex((c) => c.id === id) + 1];
      if ((next ? next.id : null) === (before == null ? null : before)) return;
    }
    const peers = sortedCards(column).filter((c) => c.id !== id);
    let at = before == null ? peers.length : peers.findIndex((c) => c.id === before);
    if (at < 0) at = peers.length;
    const prev = peers[at - 1], next = peers[at];
    const position = next ? (prev ? (prev.position + next.position) / 2 : next.position - 1) : (prev ? prev.position + 1 : 1);
    state.cards.set(id, { ...card, column, position });
    scheduleRender();
    try {
      const { card: saved } = await api(`/api/cards/${id}`, { method: 'PATCH', body: { column, before: next ? next.id : null } });
      applyCard(saved);
    } catch (error) {
      toast('Could not move the card: ' + error.message, 'error');
      state.cards.delete(id);
      loadBoard();
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
    const list = e.currentTarget;
    const target = dropTarget(list, e.clientY);
    if (target) target.classList.add('drop-before'); else list.classList.add('drop-end');
  }
  function onDragLeave(e) { if (!e.currentTarget.contains(e.relatedTarget)) clearDropMarks(); }
  function onDrop(e, column) {
    e.preventDefault();
    const id = Number(e.dataTransfer.getData('text/plain')) || state.dragging;
    const target = dropTarget(e.currentTarget, e.clientY);
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
    $('dialog-meta').textContent = `version ${card.version}` + (by ? ` · last change by ${by.name.split(' ')[0]}` : '');
    $('f-title').value = card.title;
    $('f-description').value = card.description;
    $('f-assignee').value = card.assignee || '';
    $('f-column').value = card.column;
    $('card-dialog').showModal();
  }
  function closeDialog() { editing = null; $('card-dialog').close(); }

  function setupDialog() {
    $('f-cancel').addEventListener('click', closeDialog);
    $('card-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const id = editing;
      const card = state.cards.get(id);
      closeDialog();
      if (!card) return;
      const changes = {};
      const title = $('f-title').value.trim(), description = $('f-description').value.trim();
      const assignee = $('f-assignee').value || null, column = $('f-column').value;
      if (title && title !== card.title) changes.title = title;
      if (description !== card.description) changes.description = description;
      if (assignee !== (card.assignee || null)) changes.assignee = assignee;
      if (column !== card.column) { changes.column = column; changes.before = null; }
      if (!Object.keys(changes).length) return;
      try {
        const { card: saved } = await api(`/api/cards/${id}`, { method: 'PATCH', body: changes });
        applyCard(saved);
      } catch (error) { toast('Could not save: ' + error.message, 'error'); }
    });
    $('f-delete').addEventListener('click', async () => {
      const id = editing;
      closeDialog();
      try { applyCard((await api(`/api/cards/${id}`, { method: 'DELETE' })).card); }
      catch (error) { toast('Could not delete: ' + error.message, 'error'); }
    });
  }

  // --- the bell ---------------------------------------------------------------------------------
  async function loadNotifications() {
    try {
      const { items, unread, stamp } = await api('/api/notifications');
      state.notifications = new Map(items.map((n) => [n.id, n]));
      setUnread(unread, stamp);
      renderNotifications();
    } catch (error) { toast('Could not load notifications: ' + error.message, 'error'); }
  }
  function setUnread(unread, stamp) {
    if (stamp < state.stamp) return; // an older count than the one shown
    state.stamp = stamp;
    state.unread = unread;
    const badge = $('bell-count');
    badge.textContent = unread > 99 ? '99+' : String(unread);
    badge.hidden = unread === 0;
    $('bell').dataset.unread = unread;
    $('bell').setAttribute('aria-label', `Notifications, ${unread} unread`);
    emit('bell', { unread, stamp });
  }
  function onNotificationEvent(data) {
    if (data.type === 'notification') {
      const fresh = !state.notifications.has(data.notification.id);
      state.notifications.set(data.notification.id, data.notification);
      const newer = data.stamp > state.stamp;
      setUnread(data.unread, data.stamp);
      renderNotifications();
      if (fresh && newer && !data.notification.read) {
        toast(data.notification.text, 'notice', data.notification.actor);
        const bell = $('bell');
        bell.classList.remove('ring'); void bell.offsetWidth; bell.classList.add('ring');
      }
    } else if (data.type === 'read') {
      for (const id of data.ids) { const n = state.notifications.get(id); if (n) n.read = true; }
      setUnread(data.unread, data.stamp);
      renderNotifications();
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
  async function openBell() {
    await loadNotifications(); // the stored list: the truth, whatever this tab missed
    if (state.unread > 0) {
      for (const n of state.notifications.values()) if (!n.read) state.justRead.add(n.id);
      try {
        const result = await api('/api/notifications/read', { method: 'POST', body: {} });
        setUnread(result.unread, result.stamp); // every other tab gets the same from pushgate
        renderNotifications();
      } catch (error) { toast('Could not mark read: ' + error.message, 'error'); }
    }
  }

  // --- away after inactivity ----------------------------------------------------------------------
  function watchActivity(awayAfter) {
    let last = Date.now(), away = false, sending = false;
    const send = async (status) => {
      sending = true;
      try { await api('/api/status', { method: 'POST', body: { status } }); away = status === 'away'; }
      catch (error) { /* try again on the next tick */ }
      sending = false;
    };
    const active = () => { last = Date.now(); if (away && !sending && !document.hidden) send('online'); };
    for (const type of ['pointerdown', 'pointermove', 'keydown', 'scroll', 'focus']) window.addEventListener(type, active, { passive: true });
    document.addEventListener('visibilitychange', () => { if (!document.hidden) active(); else last = Date.now(); });
    setInterval(() => {
      if (!away && !sending && Date.now() - last > awayAfter * 1000) send('away');
    }, Math.min(5000, awayAfter * 250));
    if (state.away.has(state.me.id)) send('online');
  }

  // --- small things ---------------------------------------------------------------------------------
  function toast(text, kind, actorId) {
    const actor = actorId && state.users.get(actorId);
    const node = el('div', { class: 'toast ' + (kind || '') }, actor ? avatar(actor, 'small') : null, el('span', {}, text));
    $('toasts').append(node);
    setTimeout(() => node.classList.add('leaving'), 4000);
    setTimeout(() => node.remove(), 4400);
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
    $('transport-links').replaceChildren(...[['', 'auto (websocket first)'], ['websocket'], ['sse'], ['longpoll', 'long polling'], ['poll', 'short polling']].map(([t, label]) => {
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
    const awayAfter = Number(params.get('away')) || me.config.away_after;
    watchActivity(awayAfter);
    window.board = { state, pg: () => pg, moveCard, openCard };
  }
  main();
})();
