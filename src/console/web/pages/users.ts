/**
 * Users and groups (administrators only): every user with its groups and role, every group with its role and
 * members; make a user (name, full name, password, groups) or a group (name, role, description), change a
 * user's groups, delete either. The API refuses what would leave no administrator, or touch a built-in group.
 */
import { call, describe, type ApiResult } from '../api.js';
import { fill, h, section, table } from '../dom.js';
import { time } from '../format.js';
import { ROLES } from '../roles.js';
import { store } from '../store.js';
import type { Group, User } from '../types.js';
import { actionButton, field, notify, valueOf, type Page } from '../ui.js';

export const usersPage: Page = {
  name: 'users',
  title: 'Users',
  needs: 'administrator',
  mount(root) {
    const usersEl = h('div', {});
    const groupsEl = h('div', {});
    const userForm = h(
      'form',
      { id: 'user-create', class: 'card' },
      h('h2', {}, 'New user'),
      h(
        'div',
        { class: 'form-grid' },
        field('Name', h('input', { name: 'name', required: true, pattern: '[a-z][a-z0-9._\\-]{0,31}' })),
        field('Full name', h('input', { name: 'fullName' })),
        field('Password', h('input', { name: 'password', type: 'password', required: true, minlength: 10, autocomplete: 'new-password' })),
        field('Groups', h('input', { name: 'groups', placeholder: 'read-only, night-shift' }), 'comma-separated'),
      ),
      h('button', { type: 'submit', 'data-action': 'create-user' }, 'Create user'),
    );
    const groupForm = h(
      'form',
      { id: 'group-create', class: 'card' },
      h('h2', {}, 'New group'),
      h(
        'div',
        { class: 'form-grid' },
        field('Name', h('input', { name: 'name', required: true, pattern: '[a-z][a-z0-9._\\-]{0,31}' })),
        field('Role', h('select', { name: 'role' }, ROLES.map((r) => h('option', { value: r }, r)))),
        field('Description', h('input', { name: 'description' })),
      ),
      h('button', { type: 'submit', 'data-action': 'create-group' }, 'Create group'),
    );
    const reload = async (): Promise<void> => {
      const [u, g] = await Promise.all([call<User[]>('GET', '/v1/users'), call<Group[]>('GET', '/v1/groups')]);
      fill(usersEl, section('Users', u.ok ? usersTable(u.body, reload) : h('p', { class: 'form-error' }, describe(u))));
      fill(groupsEl, section('Groups', g.ok ? groupsTable(g.body, reload) : h('p', { class: 'form-error' }, describe(g))));
    };
    const submitted = (form: HTMLFormElement, what: string, r: ApiResult<unknown>): void => {
      if (!r.ok) return notify(`${what}: ${describe(r)}`, 'bad');
      notify(`${what}: done`, 'good');
      form.reset();
      void reload();
    };
    userForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const name = valueOf(userForm, 'name');
      const fullName = valueOf(userForm, 'fullName');
      const body = { name, password: (userForm.elements.namedItem('password') as HTMLInputElement).value, groups: listOf(valueOf(userForm, 'groups')), ...(fullName ? { fullName } : {}) };
      void call('POST', '/v1/users', body).then((r) => submitted(userForm, `Create user ${name}`, r));
    });
    groupForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const name = valueOf(groupForm, 'name');
      const description = valueOf(groupForm, 'description');
      void call('POST', '/v1/groups', { name, role: valueOf(groupForm, 'role'), ...(description ? { description } : {}) }).then((r) => submitted(groupForm, `Create group ${name}`, r));
    });
    fill(root, h('h1', {}, 'Users and groups'), usersEl, groupsEl, h('div', { class: 'grid' }, userForm, groupForm));
    void reload();
    return { update: () => {} };
  },
};

function listOf(text: string): string[] {
  return text.split(',').map((s) => s.trim()).filter((s) => s !== '');
}

function usersTable(users: User[], reload: () => Promise<void>): HTMLElement {
  return table(
    ['user', 'full name', 'groups', 'role', 'made', 'password changed', 'actions'],
    users.map((u) => {
      const groups = h('input', { value: u.groups.join(', '), 'aria-label': `groups of ${u.name}`, 'data-user': u.name });
      return [
        u.name,
        u.fullName,
        groups,
        u.role ?? 'none',
        time(u.createdAt),
        time(u.passwordChangedAt),
        h(
          'div',
          { class: 'actions', 'data-user': u.name },
          actionButton('Set groups', 'administrator', 'set-groups', async () => {
            const r = await call('PATCH', `/v1/users/${encodeURIComponent(u.name)}`, { groups: listOf(groups.value) });
            if (r.ok) void reload();
            return r;
          }),
          u.name === store.user?.name
            ? null
            : actionButton('Delete', 'administrator', 'delete-user', async () => {
                if (!confirm(`Delete user ${u.name}? Its sessions end.`)) return null;
                const r = await call('DELETE', `/v1/users/${encodeURIComponent(u.name)}`);
                if (r.ok) void reload();
                return r;
              }),
        ),
      ];
    }),
    'No users.',
    { id: 'users' },
  );
}

function groupsTable(groups: Group[], reload: () => Promise<void>): HTMLElement {
  return table(
    ['group', 'role', 'description', 'members', 'actions'],
    groups.map((g) => [
      g.name,
      g.role,
      g.description,
      g.members.join(', ') || '—',
      g.builtin
        ? 'built-in'
        : actionButton('Delete', 'administrator', 'delete-group', async () => {
            if (!confirm(`Delete group ${g.name}? Its members leave it.`)) return null;
            const r = await call('DELETE', `/v1/groups/${encodeURIComponent(g.name)}`);
            if (r.ok) void reload();
            return r;
          }),
    ]),
    'No groups.',
    { id: 'groups' },
  );
}
