/** Ansible's exit codes, so wrappers written for ansible-playbook read ours the same way. */
export const EXIT_CODES = { ok: 0, error: 1, failed: 2, unreachable: 3, inventory: 4, usage: 5, interrupted: 99 } as const;
