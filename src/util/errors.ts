/**
 * Operational errors at the edges of Lockstep: a stable code, a message a person can act on, typed fields
 * and the cause. Domain outcomes are values, never these; bugs are assertions (see `assert.ts`).
 *
 * Every code is listed in `ERROR_CODES` with the situation that raises it; `docs/errors.md` is kept in
 * step with it by a test.
 */
export const ERROR_CODES = {
  MISSING_PREREQUISITE: 'a program or package the product needs is not installed',
  COMMAND_FAILED: 'an external command exited with an error',
  INVALID_ARGUMENT: 'a CLI argument, option or value is not valid',
  INVALID_SPEC: 'a VM spec or config file does not have the expected shape',
  UNKNOWN_VM: 'no VM of that name exists',
  UNKNOWN_VOLUME: 'no volume of that name exists',
  UNKNOWN_STORAGE_GROUP: 'no storage group of that name is configured on this host',
  STORAGE_GROUP_FULL: "a volume, or the peer's copy of one, does not fit in its storage group",
  UNKNOWN_VCD: 'no virtual CD of that name is on this host',
  VCD_EXISTS: 'a virtual CD of that name exists already on this host, or is being uploaded',
  VCD_NOT_ISO: 'an uploaded virtual CD is not an ISO 9660 image (too short, or no CD001 signature)',
  VCD_UPLOAD: "a virtual CD's upload ended before its Content-Length: nothing was kept",
  VCD_IN_USE: "a virtual CD cannot be deleted while a VM's CD drive holds it",
  UNKNOWN_SNAPSHOT: 'no snapshot or image of that id exists on this host',
  SNAPSHOT_FAILED: "a VM's snapshot could not be taken (QEMU's backup job or qemu-img failed); nothing was kept",
  SNAPSHOT_REFUSED: "a snapshot cannot be taken here now: the VM runs on the peer, or this host's copy of its volume is not current",
  IMAGE_INVALID: 'an image is not one a VM can start from: not qcow2 or raw, a backing or data file, larger than the disk, or cut short',
  SNAPSHOT_IN_USE: 'a snapshot or image cannot be deleted while a VM that has not made its volume from it yet names it as its source',
  UNKNOWN_HOST: 'no lab host of that name exists',
  UNKNOWN_FAULT: 'no fault of that name exists for that target',
  LAB_NOT_UP: 'the lab is not up',
  LAB_ALREADY_UP: 'the lab is already up with a different configuration',
  HOST_DOWN: 'the host is powered off or unreachable',
  QMP_ERROR: 'QEMU answered a QMP command with an error',
  QMP_TIMEOUT: 'QEMU did not answer a QMP command in time',
  QMP_DISCONNECTED: 'the QMP socket closed or could not be reached',
  QMP_PROTOCOL: 'QEMU sent something that is not valid QMP',
  VM_START_FAILED: 'QEMU could not start the VM',
  VM_NOT_RUNNING: 'the VM is not running',
  VM_ALREADY_EXISTS: 'a VM of that name exists already',
  NIC_IN_USE: "a new VM's NIC has the MAC or the address of a NIC of another of the pair's VMs",
  VM_STOP_FAILED: 'QEMU did not exit even after SIGKILL (stuck in the kernel)',
  MEMORY_DIR_FULL: "the tmpfs for guest RAM files (ft.memoryDir) has no room for a VM's RAM beside what its files already promise",
  KVM_UNAVAILABLE: 'KVM was asked for but /dev/kvm is missing or cannot be opened',
  GUEST_IMAGE: 'the guest image could not be built',
  RECORD_SERVICE: 'the guest record service did not answer as expected',
  RECORD_TIMEOUT: 'the guest record service did not answer a request in time',
  RECORD_CONNECTION_LOST: 'the connection to the guest record service closed or could not be made',
  DISK_EXISTS: 'a disk image file exists already at that path and will not be overwritten',
  DAEMON_UNREACHABLE: 'lockstepd did not answer on its API socket',
  DAEMON_ERROR: 'lockstepd answered a request with an error',
  PERMISSION_DENIED: 'the operation needs privileges this process does not have',
  INVALID_MESSAGE: 'a peer message, A-Link frame or quorum protocol line does not match the wire format; the field is named',
  ALINK_TLS: 'the A-Link certificate, key or pair CA cannot be read or do not fit together',
  INVALID_CERTIFICATE: 'a certificate file is not a PEM certificate, or not the kind expected (a CA, the CA of that pair)',
  QUORUM_STATE: 'the quorum server state directory is not initialized, already initialized, in use, or holds a corrupt record',
  STATE_DB: "lockstepd's state database cannot be opened, is newer than this version, or holds a corrupt row",
  PAIRING: 'pairing with the peer failed: no peer found, wrong pairing secret, or the peer sent something unusable',
  NOT_PAIRED: 'the host has no pair certificates yet: pairing has not been done',
  COMMAND_REFUSED: 'the Availability Services refused an operator command (the reason says why)',
  REPLICATION_STREAM: 'a disk replication stream to or from the peer was refused or broke (identity, header, unknown VM, no export)',
  COPY_EXPORT: "the export of this host's copy of a VM disk (qemu-nbd) could not be started or died",
  MIRROR_FAILED: "mirroring a VM disk to the peer's copy failed (QEMU's block job reported an error or could not start)",
  MIGRATION_FAILED: 'a live migration failed, was cancelled or did not converge',
  UNKNOWN_ENDPOINT: 'no API endpoint has that path',
  METHOD_NOT_ALLOWED: 'the API endpoint exists but not for that HTTP method',
  PAYLOAD_TOO_LARGE: "an API request body is over its endpoint's limit (1 MiB of JSON; a virtual CD's 16 GiB)",
  UNSUPPORTED_MEDIA_TYPE: 'an API request body is not sent as application/json',
  NOT_AUTHENTICATED: 'a management API request has no session, or its session has expired or ended',
  FORBIDDEN: "the user's role does not allow that management API operation",
  LOGIN_FAILED: 'wrong user name or password',
  WRONG_PASSWORD: 'the current password given to change it is wrong',
  RATE_LIMITED: 'too many failed logins for that user or from that address: wait and retry',
  SETUP_DONE: 'the first administrator exists already: first-run setup is over',
  UNKNOWN_USER: 'no management API user of that name exists',
  UNKNOWN_GROUP: 'no management API group of that name exists',
  USER_EXISTS: 'a user of that name exists already',
  GROUP_EXISTS: 'a group of that name exists already',
  BUILTIN_GROUP: 'a built-in group cannot be deleted or change its role',
  LAST_ADMINISTRATOR: 'the change would leave users without an administrator',
  USERS_DB: "the management API's user database cannot be opened, is newer than this version, or holds a corrupt row",
  AUDIT_DB: 'the audit log cannot be opened, is newer than this version, or cannot be written',
  MANAGEMENT_TLS: "the management API's certificate or key cannot be read, made, or do not fit together",
  UPGRADE_REQUIRED: 'the live event stream was asked for without a WebSocket upgrade',
  TOO_MANY_STREAMS: 'the live event stream has as many clients as it serves at once',
  CONSOLE_UNAVAILABLE: "the Availability Console's files could not be loaded when lockstepd started (not built, or missing)",
  CONSOLE_LOG_UNREADABLE: "a VM's console log (its QEMU's serial log) exists on this host but could not be read",
  NOTIFY_OUTBOX: "lockstepd's notification outbox (SQLite) cannot be opened, is newer than this version, or holds a corrupt row",
  UNKNOWN_RECEIVER: 'no notification receiver of that name is configured on this host',
  NOTIFICATIONS_OFF: 'the host sends no notifications: none are configured, or its outbox could not be opened',
  CONFIG_CHANGED: "a preference setter refused to rewrite lockstepd's config file: it changed on disk since lockstepd read it (edited by hand)",
  CONFIG_WRITE: "lockstepd's config file could not be read back or rewritten by a preference setter; nothing was changed",
  OUTPUT_GATE_FRAME: "a record on an FT output gate's socket does not match filter-redirector's framing (length, vnet header length); the gate closes",
  OUTPUT_GATE: "an FT output gate could not listen on its sockets, or attaching it to (or detaching it from) a VM's NIC over QMP failed",
  NBD_PROTOCOL: 'an NBD server or client broke the NBD protocol, or an NBD server refused the export asked for',
  NBD_DISCONNECTED: 'an NBD connection could not be made, closed, or went unanswered past its bound',
  NBD_REQUEST_FAILED: 'an NBD server answered a request with an error (fields.errno)',
  EPOCH_DISK: "the FT backup's epoch disk cannot hold, commit or hand over the copy (a write was refused or lost, the copy failed)",
  CHECKPOINT_CAPTURE: "an FT checkpoint could not be taken on the primary (QMP stop/save/cont failed, the guest's RAM file or device state could not be read)",
  CHECKPOINT_WIRE: 'an FT checkpoint stream does not match the wire format (truncated, wrong sizes, pages outside RAM, bad checksum, oversized); the field is named',
  CHECKPOINT_STORE: "the backup's FT checkpoint store refused an epoch (not the next one and not a full image, another VM or size) or cannot be opened or written",
  CHECKPOINT_REFUSED: 'the backup refused an FT checkpoint; its error code and message are in the fields',
  CHECKPOINT_LINK: 'the FT checkpoint stream to or from the peer closed or failed, or an ack did not come in time',
  CHECKPOINT_RESUME: "a VM could not be resumed from the backup's committed FT checkpoint",
  FT_PRIMARY: 'FT protection of a VM could not start on the primary (its disk mirror is not in sync, its output gate is not holding)',
  FT_TAKEOVER: "the FT backup could not take over a VM: its disk and its RAM/device store are not at the same committed epoch, or the copy could not be released",
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class LockstepError extends Error {
  override readonly name = 'LockstepError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly fields: Readonly<Record<string, unknown>> = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  toJSON(): { code: ErrorCode; message: string; fields: Readonly<Record<string, unknown>> } {
    return { code: this.code, message: this.message, fields: this.fields };
  }
}

export function isLockstepError(e: unknown, code?: ErrorCode): e is LockstepError {
  return e instanceof LockstepError && (code === undefined || e.code === code);
}

/** A message for any thrown value, for logs and the CLI. */
export function describeError(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}
