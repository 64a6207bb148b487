// The per-family table: what differs between Linux families is data here, not if-chains elsewhere
// (in the spirit of an Ansible role's vars/<OSFamily>.yml). Matching is by os-release ID, then ID_LIKE.

import { shWords } from '../remote/quote.ts';
import type { PackageRole } from './modes.ts';

export type OsFamilyName = 'debian' | 'redhat' | 'suse';
export type PackageManagerName = 'apt' | 'dnf' | 'yum' | 'zypper';

export interface OsFamily {
  name: OsFamilyName;
  /** os-release ID values of the family (and the ID_LIKE tokens that point to it), lower case */
  ids: string[];
  /** in preference order: the first one present on the node is used (EL7 has yum only; EL8+ dnf) */
  packageManagers: PackageManagerName[];
  /**
   * the family's package for each tool a mode needs; where releases of the family name it differently,
   * every name: whichever is installed counts, the first is installed where none is
   */
  packages: Readonly<Record<PackageRole, readonly string[]>>;
  /** how installed packages are queried on the node */
  packageQuery: 'dpkg' | 'rpm';
}

export interface PackageManager {
  name: PackageManagerName;
  /** the executable looked up on the node to tell whether this manager is present */
  command: string;
  /**
   * the full, non-interactive shell command installing `pkgs` (each quoted with shQuote); it waits up to
   * `lockTimeoutS` for another package manager run to let go of the lock where the manager can be told
   * so (apt, zypper; dnf and yum wait on their own, bounded by kpm_command_timeout)
   */
  install: (pkgs: string[], lockTimeoutS?: number) => string;
  /** refreshes the package lists; used once when an install reports unknown packages or empty lists */
  refresh?: string;
}

export const OS_FAMILIES: readonly OsFamily[] = [
  {
    name: 'debian',
    ids: ['debian', 'ubuntu', 'linuxmint', 'pop', 'raspbian', 'elementary', 'zorin', 'kali', 'devuan', 'neon'],
    packageManagers: ['apt'],
    packages: { ipvsadm: ['ipvsadm'], ipset: ['ipset'], conntrack: ['conntrack'], iptables: ['iptables'], nftables: ['nftables'] },
    packageQuery: 'dpkg',
  },
  {
    name: 'redhat',
    // `rhel`, `centos` and `fedora` are also the ID_LIKE tokens of the EL rebuilds (rocky: "rhel centos fedora").
    ids: ['rhel', 'centos', 'rocky', 'almalinux', 'fedora', 'ol', 'amzn', 'scientific', 'cloudlinux', 'eurolinux', 'virtuozzo', 'circle', 'navy'],
    packageManagers: ['dnf', 'yum'],
    // EL9 and Fedora ship iptables as iptables-nft; EL7 and EL8 as iptables
    packages: {
      ipvsadm: ['ipvsadm'],
      ipset: ['ipset'],
      conntrack: ['conntrack-tools'],
      iptables: ['iptables-nft', 'iptables'],
      nftables: ['nftables'],
    },
    packageQuery: 'rpm',
  },
  {
    name: 'suse',
    // `suse` and `opensuse` are ID_LIKE tokens ("suse opensuse"). The transactional systems (opensuse-microos,
    // sle-micro) are deliberately absent: `zypper install` does not apply there (transactional-update does).
    ids: ['sles', 'sled', 'sles_sap', 'opensuse', 'opensuse-leap', 'opensuse-tumbleweed', 'opensuse-slowroll', 'suse'],
    packageManagers: ['zypper'],
    packages: { ipvsadm: ['ipvsadm'], ipset: ['ipset'], conntrack: ['conntrack-tools'], iptables: ['iptables'], nftables: ['nftables'] },
    packageQuery: 'rpm',
  },
];

function checkPackages(manager: string, pkgs: string[]): void {
  if (pkgs.length === 0) throw new Error(`${manager}: no packages to install`);
  for (const p of pkgs) {
    // shQuote makes any name one word, but cannot stop a word from being read as an option.
    if (p === '' || p.startsWith('-')) throw new Error(`${manager}: invalid package name ${JSON.stringify(p)}`);
  }
}

/** kpm_package_lock_timeout's default: seconds to wait for another package manager run's lock */
export const DEFAULT_LOCK_TIMEOUT_S = 120;

function lockTimeout(s: number): number {
  if (!Number.isInteger(s) || s < 0) throw new Error(`invalid package lock timeout ${s}`);
  return s;
}

/** A manager whose executable is its name and whose install is `<command> <packages>`. */
function simpleManager(name: PackageManagerName, install: string, refresh: string): PackageManager {
  return {
    name,
    command: name,
    install: (pkgs) => {
      checkPackages(name, pkgs);
      return `${install} ${shWords(pkgs)}`;
    },
    refresh,
  };
}

export const PACKAGE_MANAGERS: Readonly<Record<PackageManagerName, PackageManager>> = {
  apt: {
    name: 'apt',
    command: 'apt-get',
    install: (pkgs, lockTimeoutS = DEFAULT_LOCK_TIMEOUT_S) => {
      checkPackages('apt', pkgs);
      // Fresh cloud nodes often run unattended-upgrades at boot: wait for dpkg's lock rather than fail
      // at once (apt >= 1.9.11 honours the option; older apt ignores it).
      return (
        `DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=${lockTimeout(lockTimeoutS)}` +
        ' -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold ' +
        shWords(pkgs)
      );
    },
    refresh: 'DEBIAN_FRONTEND=noninteractive apt-get update -q',
  },
  dnf: simpleManager('dnf', 'dnf -y -q install', 'dnf -y -q makecache --refresh'),
  yum: simpleManager('yum', 'yum -y -q install', 'yum -y -q makecache'),
  zypper: {
    ...simpleManager('zypper', 'zypper --non-interactive --quiet install --no-recommends', 'zypper --non-interactive --quiet refresh'),
    install: (pkgs, lockTimeoutS = DEFAULT_LOCK_TIMEOUT_S) => {
      checkPackages('zypper', pkgs);
      return `ZYPP_LOCK_TIMEOUT=${lockTimeout(lockTimeoutS)} zypper --non-interactive --quiet install --no-recommends ${shWords(pkgs)}`;
    },
  },
};

/** The order used when the family is unknown. */
export const PACKAGE_MANAGER_ORDER: readonly PackageManagerName[] = ['apt', 'dnf', 'yum', 'zypper'];

/** The family of an OS: by its os-release ID first, then by each ID_LIKE token in order; null if none. */
export function familyOf(os: { id: string; idLike: string[] }): OsFamily | null {
  const byId = (id: string): OsFamily | undefined => {
    const key = id.trim().toLowerCase();
    return key === '' ? undefined : OS_FAMILIES.find((f) => f.ids.includes(key));
  };
  const direct = byId(os.id);
  if (direct) return direct;
  for (const like of os.idLike) {
    const f = byId(like);
    if (f) return f;
  }
  return null;
}
