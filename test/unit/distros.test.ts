import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { familyOf, OS_FAMILIES, PACKAGE_MANAGER_ORDER, PACKAGE_MANAGERS } from '../../tasks/node/distros.ts';

const fam = (id: string, idLike: string[] = []): string | null => familyOf({ id, idLike })?.name ?? null;

describe('familyOf', () => {
  it.each([
    ['debian', [], 'debian'],
    ['ubuntu', ['debian'], 'debian'],
    ['linuxmint', ['ubuntu', 'debian'], 'debian'],
    ['pop', ['ubuntu', 'debian'], 'debian'],
    ['raspbian', ['debian'], 'debian'],
    ['rhel', ['fedora'], 'redhat'],
    ['centos', ['rhel', 'fedora'], 'redhat'],
    ['rocky', ['rhel', 'centos', 'fedora'], 'redhat'],
    ['almalinux', ['rhel', 'centos', 'fedora'], 'redhat'],
    ['fedora', [], 'redhat'],
    ['ol', ['fedora'], 'redhat'],
    ['amzn', ['centos', 'rhel', 'fedora'], 'redhat'],
    ['sles', ['suse'], 'suse'],
    ['sled', ['suse'], 'suse'],
    ['opensuse-leap', ['suse', 'opensuse'], 'suse'],
    ['opensuse-tumbleweed', ['opensuse', 'suse'], 'suse'],
  ] as const)('%s (ID_LIKE %j) -> %s', (id, like, want) => {
    expect(fam(id, [...like])).toBe(want);
  });

  it('falls back to ID_LIKE, in order, for derivatives it does not list', () => {
    expect(fam('someday-linux', ['rhel', 'fedora'])).toBe('redhat');
    expect(fam('myubuntu', ['ubuntu', 'debian'])).toBe('debian');
    expect(fam('suse-derivative', ['opensuse'])).toBe('suse');
    expect(fam('weird', ['unknown', 'debian'])).toBe('debian');
  });

  it('prefers ID over ID_LIKE', () => {
    expect(fam('fedora', ['debian'])).toBe('redhat');
  });

  it('is case-insensitive and ignores blanks', () => {
    expect(fam(' Ubuntu ', [])).toBe('debian');
    expect(fam('', ['', 'RHEL'])).toBe('redhat');
  });

  it('returns null for unsupported systems', () => {
    expect(fam('alpine')).toBeNull();
    expect(fam('arch')).toBeNull();
    expect(fam('opensuse-microos', ['suse', 'opensuse-tumbleweed'])).toBe('suse'); // via ID_LIKE only
    expect(fam('', [])).toBeNull();
    expect(fam('gentoo', ['gentoo'])).toBeNull();
  });
});

describe('OS_FAMILIES', () => {
  const by = (n: string) => OS_FAMILIES.find((f) => f.name === n);

  it('names the packages per family', () => {
    expect(by('debian')?.packages).toEqual({ ipvsadm: ['ipvsadm'], ipset: ['ipset'], conntrack: ['conntrack'], iptables: ['iptables'], nftables: ['nftables'] });
    expect(by('redhat')?.packages).toEqual({
      ipvsadm: ['ipvsadm'],
      ipset: ['ipset'],
      conntrack: ['conntrack-tools'],
      iptables: ['iptables-nft', 'iptables'],
      nftables: ['nftables'],
    });
    expect(by('suse')?.packages).toEqual({ ipvsadm: ['ipvsadm'], ipset: ['ipset'], conntrack: ['conntrack-tools'], iptables: ['iptables'], nftables: ['nftables'] });
  });

  it('orders package managers (EL8+ dnf before yum) and says how packages are queried', () => {
    expect(by('debian')).toMatchObject({ packageManagers: ['apt'], packageQuery: 'dpkg' });
    expect(by('redhat')).toMatchObject({ packageManagers: ['dnf', 'yum'], packageQuery: 'rpm' });
    expect(by('suse')).toMatchObject({ packageManagers: ['zypper'], packageQuery: 'rpm' });
  });

  it('has no ID in two families, all lower case, and only known package managers', () => {
    const ids = OS_FAMILIES.flatMap((f) => f.ids);
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) expect(id).toBe(id.toLowerCase());
    for (const f of OS_FAMILIES) for (const pm of f.packageManagers) expect(PACKAGE_MANAGERS[pm].name).toBe(pm);
  });
});

describe('PACKAGE_MANAGERS', () => {
  const pkgs = ['ipvsadm', 'ipset', 'conntrack'];

  it('builds the exact non-interactive install commands', () => {
    expect(PACKAGE_MANAGERS.apt.install(pkgs)).toBe(
      'DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=120 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold ipvsadm ipset conntrack',
    );
    expect(PACKAGE_MANAGERS.dnf.install(['ipvsadm', 'conntrack-tools'])).toBe('dnf -y -q install ipvsadm conntrack-tools');
    expect(PACKAGE_MANAGERS.yum.install(['ipvsadm'])).toBe('yum -y -q install ipvsadm');
    expect(PACKAGE_MANAGERS.zypper.install(['ipvsadm', 'conntrack-tools'])).toBe(
      'ZYPP_LOCK_TIMEOUT=120 zypper --non-interactive --quiet install --no-recommends ipvsadm conntrack-tools',
    );
    // kpm_package_lock_timeout
    expect(PACKAGE_MANAGERS.apt.install(pkgs, 5)).toContain(' -o DPkg::Lock::Timeout=5 ');
    expect(PACKAGE_MANAGERS.zypper.install(pkgs, 0)).toMatch(/^ZYPP_LOCK_TIMEOUT=0 zypper /);
    expect(() => PACKAGE_MANAGERS.apt.install(pkgs, -1)).toThrow(/lock timeout/);
  });

  it('quotes package names with shQuote', () => {
    const cmd = PACKAGE_MANAGERS.dnf.install(["weird name", "it's"]);
    expect(cmd).toBe(`dnf -y -q install 'weird name' 'it'\\''s'`);
    // the words a shell sees are exactly the names
    const r = spawnSync('bash', ['-c', `set -- ${cmd.slice('dnf -y -q install '.length)}; printf '%s\\0' "$@"`], { encoding: 'utf8' });
    expect(r.stdout.split('\0').slice(0, -1)).toEqual(['weird name', "it's"]);
  });

  it('refuses an empty list and names that would be read as options', () => {
    for (const pm of PACKAGE_MANAGER_ORDER) {
      expect(() => PACKAGE_MANAGERS[pm].install([])).toThrow(/no packages/);
      expect(() => PACKAGE_MANAGERS[pm].install(['-y'])).toThrow(/invalid package name/);
      expect(() => PACKAGE_MANAGERS[pm].install([''])).toThrow(/invalid package name/);
    }
  });

  it('gives valid shell syntax for every command, and a refresh where lists can be stale', () => {
    for (const pm of PACKAGE_MANAGER_ORDER) {
      const m = PACKAGE_MANAGERS[pm];
      expect(spawnSync('bash', ['-n', '-c', m.install(pkgs)]).status).toBe(0);
      if (m.refresh) expect(spawnSync('bash', ['-n', '-c', m.refresh]).status).toBe(0);
    }
    expect(PACKAGE_MANAGERS.apt.refresh).toMatch(/apt-get update/);
    expect(PACKAGE_MANAGERS.apt.command).toBe('apt-get');
  });
});
