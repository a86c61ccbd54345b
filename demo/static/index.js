// The user picker: no passwords, the chosen user is kept in a cookie by the backend.
'use strict';
(async () => {
  const { api, explain, el, avatar, withQuery } = window.demo;
  const usersList = document.getElementById('users');
  const problem = document.getElementById('problem');

  // A failure is said in the page, in plain words; the next click or reload tries again.
  async function attempt(what, action) {
    try {
      await action();
      problem.hidden = true;
    } catch (error) {
      problem.textContent = `${what} ${explain(error)} Try again in a moment.`;
      problem.hidden = false;
    }
  }

  async function show() {
    const me = await api('/api/me');
    usersList.replaceChildren(...me.users.map((u) => el('li', {},
      el('button', {
        type: 'button', class: 'user-card' + (u.id === me.user ? ' selected' : ''), dataset: { user: u.id },
        onclick: () => attempt('Couldn’t sign you in.', async () => { await api('/api/login', { method: 'POST', body: { user: u.id } }); await show(); }),
      }, avatar(u, 'large'), el('span', { class: 'user-name' }, u.name), el('span', { class: 'muted small' }, '@' + u.id)))));
    const boards = document.getElementById('boards');
    boards.hidden = !me.user;
    document.getElementById('board-links').replaceChildren(...me.boards.map((b) => el('li', {},
      el('a', { class: 'board-link', href: withQuery(`/demo/board/${b.id}`), dataset: { board: b.id } },
        el('span', { class: 'board-link-name' }, b.name),
        el('span', { class: 'stack' }, b.members.map((id) => avatar(me.users.find((u) => u.id === id), 'small')))))));
    window.demo.emit('picker', { user: me.user });
  }
  attempt('Couldn’t load Teamboard.', show);
  window.addEventListener('online', () => { if (!problem.hidden) attempt('Couldn’t load Teamboard.', show); });
})();
