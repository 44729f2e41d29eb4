/**
 * The Preferences page's edit forms, for the sections lockstepd changes while it runs (PUT
 * /v1/preferences/owner, /resync, /notifications: written to the host's lockstepd.json, applied at once).
 * Each form starts from the view, saves the whole section, and shows the API's refusal next to itself; on
 * success the page takes the answer (the preferences as they are now). Made only for a role that may save
 * (platform manager and up): a read-only user sees the values, no form.
 *
 * A form keeps what was typed in it across the page's redraws (the live status redraws the page often):
 * the page keeps the same form until it is saved, or until the preferences change while it is untouched.
 * The notifications are edited as the section's JSON, the shape of the config file's section, each secret
 * kept as `{"keep": RECEIVER}` (the view shows no secret, so the form cannot hold one it did not get).
 */
import { call, describe, type ApiResult } from '../api.js';
import { fill, h } from '../dom.js';
import type { Preferences } from '../types.js';
import { field, notify, valueOf } from '../ui.js';

export interface EditForm {
  element: HTMLFormElement;
  /** Whether something was typed since the form was made from the view. */
  touched(): boolean;
}

export type EditSection = 'owner' | 'resync' | 'notifications';
export type EditForms = Record<EditSection, EditForm>;

/** Told of a save that worked: the answer, and which form saved (it is made again from the answer). */
export type Saved = (next: Preferences, section: EditSection) => void;

/** The three forms, made from the view. */
export function editForms(p: Preferences, saved: Saved): EditForms {
  return { owner: ownerForm(p, saved), resync: resyncForm(p, saved), notifications: notificationsForm(p, saved) };
}

function ownerForm(p: Preferences, saved: Saved): EditForm {
  const o = p.owner;
  const text = (name: string, value: string | null | undefined, required = false): HTMLInputElement => h('input', { name, value: value ?? '', maxlength: 200, ...(required ? { required: true } : {}) });
  return form('owner', 'Save owner', saved, [
    field('Name', text('name', o?.name, true)),
    field('Contact', text('contact', o?.contact)),
    field('Email', text('email', o?.email)),
    field('Phone', text('phone', o?.phone)),
    field('Site', text('site', o?.site)),
  ], (f) => {
    // What is left empty is not given: the section has only the fields filled in.
    const given = ['contact', 'email', 'phone', 'site'].flatMap((k) => (valueOf(f, k) === '' ? [] : [[k, valueOf(f, k)] as const]));
    return { name: valueOf(f, 'name'), ...Object.fromEntries(given) };
  });
}

function resyncForm(p: Preferences, saved: Saved): EditForm {
  const rate = (name: string, value: number | null): HTMLInputElement => h('input', { name, value: value === null ? '' : String(value), inputmode: 'decimal', placeholder: 'no limit' });
  // Empty: no limit (null); a text that is not a number goes as it is, for the API to refuse naming the field.
  const mibps = (v: string): number | string | null => (v === '' ? null : Number.isFinite(Number(v)) ? Number(v) : v);
  return form('resync', 'Save resync rate', saved, [
    field('At most (MiB/s)', rate('maxMiBps', p.resync.maxMiBps), 'empty: no limit'),
    field('While the guest does disk I/O (MiB/s)', rate('busyMiBps', p.resync.busyMiBps), 'empty: no limit'),
  ], (f) => ({ maxMiBps: mibps(valueOf(f, 'maxMiBps')), busyMiBps: mibps(valueOf(f, 'busyMiBps')) }));
}

function notificationsForm(p: Preferences, saved: Saved): EditForm {
  const editor = h('textarea', { name: 'section', rows: 14, spellcheck: 'false', class: 'json' });
  editor.value = JSON.stringify(p.notificationsConfig, null, 2);
  return form('notifications', 'Save notifications', saved, [
    field('The notifications section (JSON)', editor, 'As in lockstepd.json (docs/notifications.md); a secret stays as {"keep": "RECEIVER"}; null: no notifications.'),
  ], (f) => {
    try {
      return JSON.parse((f.elements.namedItem('section') as HTMLTextAreaElement).value) as unknown;
    } catch (e) {
      return new Error(`the section is not JSON: ${(e as Error).message}`);
    }
  });
}

/** A form that PUTs `bodyOf` (or shows the Error it gives) to the section's setter. */
function form(section: EditSection, label: string, saved: Saved, fields: HTMLElement[], bodyOf: (f: HTMLFormElement) => unknown): EditForm {
  const error = h('p', { class: 'form-error', id: `${section}-form-error`, role: 'alert' });
  const save = h('button', { type: 'submit', 'data-action': `save-${section}` }, label);
  const element = h('form', { id: `${section}-form`, class: 'edit-form' }, h('div', { class: 'form-grid' }, ...fields), h('div', { class: 'actions' }, save), error);
  let touched = false;
  element.addEventListener('input', () => {
    touched = true;
  });
  element.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const body = bodyOf(element);
    if (body instanceof Error) return fill(error, body.message);
    save.disabled = true;
    void call<Preferences>('PUT', `/v1/preferences/${section}`, body)
      .then((r: ApiResult<Preferences>) => {
        if (!r.ok) return fill(error, describe(r));
        fill(error);
        notify(`${label}: written to ${r.body.configFile} and applied`, 'good');
        saved(r.body, section);
      })
      .finally(() => {
        save.disabled = false;
      });
  });
  return { element, touched: () => touched };
}
