/**
 * A running VM's CD drive over QMP: the medium changed, ejected, and read back. `blockdev-change-medium`
 * and `eject` with `force`: the drive's tray opens even when the guest has locked it (a mounted disc), as a
 * CD drive's emergency eject does; the guest sees the disc change as a real drive reports it.
 */
import type { QmpClient } from './qmp.js';

/** Puts `image` (an ISO, read-only, raw) in the drive `id`, replacing what is there. */
export async function insertMedium(qmp: QmpClient, id: string, image: string): Promise<void> {
  await qmp.execute('blockdev-change-medium', { id, filename: image, format: 'raw', 'read-only-mode': 'read-only', force: true });
}

/** Takes the medium out of the drive `id` (nothing to do when it is empty). */
export async function ejectMedium(qmp: QmpClient, id: string): Promise<void> {
  await qmp.execute('eject', { id, force: true });
}

interface BlockInfo {
  qdev?: string;
  tray_open?: boolean;
  inserted?: { file?: string; ro?: boolean };
}

/** The file in the drive `id` as QEMU reports it (`query-block`); null when it holds none. */
export async function mediumOf(qmp: QmpClient, id: string): Promise<{ file: string; readOnly: boolean } | null> {
  const blocks = await qmp.execute<BlockInfo[]>('query-block');
  const drive = blocks.find((b) => b.qdev === id);
  const file = drive?.inserted?.file;
  return file === undefined ? null : { file, readOnly: drive!.inserted!.ro === true };
}
