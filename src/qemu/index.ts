/** The QEMU driver: QMP client, VM spec and command line, accelerator choice, process supervision. */
export { QmpClient, type QmpEvent, type QmpClosed, type QmpCloseCause, type QmpGreeting, type QmpVersion } from './qmp.js';
export { parseVmSpec, type VmSpec, type VmDisk, type VmNic, type VmBoot, type AccelRequest } from './vm-spec.js';
export { qemuArgs, fileNodeName, RAM_BACKEND_ID, type Accel, type QemuArgsOptions } from './command-line.js';
export { resolveAccel, probeKvm, DEFAULT_KVM_PROBE_CACHE, type AccelVerdict, type KvmProbeResult } from './accel.js';
export { VmSupervisor, VmInstance, reapStale, DEFAULT_RUN_ROOT, type VmExit, type VmExitCause, type StartOptions, type StopOptions } from './supervisor.js';
export { type DriverLog, silentLog } from './log.js';
