// Helpers shared by the demo's pages (no framework, no build step).
'use strict';
(() => {
  const BASE = '/demo';

  // A test harness may define window.report(type, data); in a normal page it is a no-op.
  const emit = (type, data) => { if (typeof window.report === 'function') window.report(type, data); };

  async function api(path, { method = 'GET', body } = {}) {
    const init = { method, credentials: 'same-origin', headers: {} };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers['Content-Type'] = 'application/json';
    }
    let response;
    try {
      response = await fetch(BASE + path, init);
    } catch (cause) { // no answer at all: the network, not the server
      const error = new Error('network error');
      error.status = 0;
      error.cause = cause;
      throw error;
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(data.error || response.statusText);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  // What went wrong, for people: never "Failed to fetch" or an HTTP status.
  const offline = () => navigator.onLine === false;
  const isNetwork = (error) => !error || !error.status; // no answer: worth trying again later
  function explain(error) {
    const status = error && error.status;
    if (!status) return offline() ? 'You’re offline.' : 'Teamboard can’t be reached right now.';
    if (status === 401) return 'You’re signed out: pick your name again.';
    if (status === 403) return 'You’re not a member of this board any more.';
    if (status === 404) return 'It was deleted meanwhile.';
    if (status === 400 || status === 409 || status === 422) return error.message.charAt(0).toUpperCase() + error.message.slice(1) + '.';
    return 'Something went wrong on our side.';
  }

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key === 'dataset') Object.assign(node.dataset, value);
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else if (key in node && key !== 'list') node[key] = value;
      else node.setAttribute(key, value === true ? '' : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function initials(name) {
    return name.split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join('');
  }

  function avatar(user, extra) {
    const a = el('span', { class: 'avatar ' + (extra || ''), title: user.name, dataset: { user: user.id } }, initials(user.name));
    a.style.background = user.color;
    return a;
  }

  function timeAgo(seconds) {
    const d = Math.max(0, Date.now() / 1000 - seconds);
    if (d < 45) return 'just now';
    if (d < 90) return 'a minute ago';
    if (d < 3600) return Math.round(d / 60) + ' minutes ago';
    if (d < 5400) return 'an hour ago';
    if (d < 86400) return Math.round(d / 3600) + ' hours ago';
    return Math.round(d / 86400) + ' days ago';
  }

  // Links keep ?transport=… so a forced transport survives navigation.
  function withQuery(path) {
    const params = new URLSearchParams(location.search);
    params.delete('as');
    const q = params.toString();
    return path + (q ? '?' + q : '');
  }

  window.demo = { BASE, api, explain, isNetwork, offline, el, emit, avatar, initials, timeAgo, withQuery };
})();
