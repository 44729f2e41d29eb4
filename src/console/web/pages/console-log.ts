/**
 * A VM's console log on its page: the last 16 KiB of what its guest wrote on its serial console, as this
 * host has it (`GET /v1/vms/NAME/console-log`), asked when the page opens and again on Refresh only. No
 * polling: a log changes with every line the guest writes, and nobody reads it that fast.
 */
import { call, describe } from '../api.js';
import { fill, h, section } from '../dom.js';
import { bytes, time } from '../format.js';
import type { ConsoleLog } from '../types.js';

/** What the page shows of the log: a boot's last screens, light enough to ask for at each Refresh. */
const SHOWN_BYTES = 16 * 1024;

/** The section, made once (the detail's redraws move the same element) and filled by its own requests. */
export function consoleLogSection(vm: string, ownerElsewhere: () => string | null): HTMLElement {
  const about = h('p', { class: 'hint' }, 'loading…');
  const text = h('pre', { class: 'console-log', id: 'vm-console-log-text' });
  const refresh = h('button', { type: 'button', 'data-action': 'console-log-refresh' }, 'Refresh');
  const load = async (): Promise<void> => {
    refresh.disabled = true;
    const r = await call<ConsoleLog>('GET', `/v1/vms/${encodeURIComponent(vm)}/console-log?bytes=${SHOWN_BYTES}`);
    refresh.disabled = false;
    if (!r.ok) {
      fill(about, describe(r));
      fill(text);
      return;
    }
    fill(about, aboutLog(r.body, ownerElsewhere()));
    fill(text, r.body.text);
    // The newest lines are the ones wanted: shown, the rest a scroll up.
    text.scrollTop = text.scrollHeight;
  };
  refresh.addEventListener('click', () => void load());
  void load();
  const el = section('Console log (on this host)', h('div', { class: 'actions' }, refresh), about, text);
  el.classList.add('wide');
  el.id = 'vm-console-log';
  return el;
}

function aboutLog(log: ConsoleLog, owner: string | null): string {
  if (!log.here) return `VM ${log.vm} has no console log on this host${owner ? `: ${owner} runs it, its console has it` : ''}.`;
  const instance = log.running ? 'Its QEMU runs here' : `Its last run on this host${owner ? ` (${owner} runs it now)` : ''}`;
  const amount = log.truncated ? `the last ${bytes(log.bytes)} of ${bytes(log.size)}` : `all ${bytes(log.size)}`;
  return `${instance}: ${amount}, asked at ${time(Date.now())}.`;
}
