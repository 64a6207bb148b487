import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { hostileCorpus, isRejected, PAYLOADS, writeCase, type HostileCase, type Target } from '../inventory-corpus.ts';
import { labSupported, startLab, type Lab } from './lab.ts';
import { runProvision, tempDir } from './helpers.ts';

// The hostile corpus (test/inventory-corpus.ts) against real hosts. Its inventories are built for this
// lab's addresses, key and known_hosts, so the accepted ones really connect and run the node phase, dry
// and for real, while carrying shell payloads in every value the tool keeps; the refused ones (payloads in
// host names, group names and in the values that reach nodes) are run too. Afterwards no payload's marker
// may exist anywhere on a host or on this machine, and the kmod fixture's logs may show no module call but
// the IPVS and conntrack modules. A control first shows that each payload does create its marker when a
// shell is handed it unquoted, and that the checks see it.

const support = labSupported();
const KMOD_LOG = '/var/log/kpm-lab-kmod.log';
const KMOD_CALLS = '/run/kpm-lab-kmod/calls.log';
const MODULE = /^(ip_vs(_[a-z]+)?|nf_conntrack(_ipv4)?)$/;

let lab: Lab;
let corpus: HostileCase[] = [];
let caseDir: (c: HostileCase) => string;
/** kmod log lines already checked, per host and file */
const seen = new Map<string, number>();

beforeAll(async () => {
  if (!support.ok) return;
  lab = await startLab({ hosts: 2, kmodShim: true, id: 'i' });
  const target: Target = {
    hosts: lab.hosts.map((h) => ({ name: h.name, address: h.address, port: h.port })),
    user: 'root',
    keyText: readFileSync(lab.key, 'utf8'),
    knownHostsText: readFileSync(lab.knownHosts, 'utf8'),
  };
  corpus = hostileCorpus(target);
  const base = tempDir('kpm-inject-');
  caseDir = (c) => join(base, c.name);
  for (const c of corpus) {
    mkdirSync(caseDir(c));
    writeCase(caseDir(c), c);
  }
});
afterAll(async () => {
  await lab?.down();
});

/**
 * Marker files of any payload on every host and on this machine: where the payloads write them and in the
 * usual working directories; with `everywhere`, the hosts' whole filesystems (a few seconds each).
 */
async function markers(everywhere = false): Promise<string[]> {
  const found: string[] = [];
  const where = everywhere
    ? "find / /run /tmp /dev/shm -xdev -name 'pwned-*' 2>/dev/null | sort -u"
    : 'ls -d /tmp/pwned-* /var/tmp/pwned-* /root/pwned-* /home/*/pwned-* /pwned-* 2>/dev/null; true';
  for (const h of lab.hosts) {
    const r = await lab.exec(h.name, where);
    for (const f of r.stdout.split('\n').filter(Boolean)) found.push(`${h.name}:${f}`);
  }
  for (const f of readdirSync('/tmp').filter((n) => n.startsWith('pwned-'))) found.push(`local:/tmp/${f}`);
  return found;
}

/**
 * New lines in the kmod fixture's logs that are not a plain call on the IPVS or conntrack modules: a
 * module name with shell characters, a payload's words, anything but options and those modules.
 */
async function strangeModuleCalls(): Promise<string[]> {
  const bad: string[] = [];
  for (const h of lab.hosts) {
    for (const file of [KMOD_LOG, KMOD_CALLS]) {
      const key = `${h.name}:${file}`;
      const lines = (await lab.exec(h.name, `cat ${file} 2>/dev/null`)).stdout.split('\n').filter(Boolean);
      const fresh = lines.slice(seen.get(key) ?? 0);
      seen.set(key, lines.length);
      for (const l of fresh) {
        const call = l.replace(/^\S+ pid=\d+ (\[[^\]]*\] )?/, '');
        if (/^kpm-lab-kmod boot: /.test(call) || /^boot:\S+ /.test(call)) continue;
        const [prog, ...args] = call.split(' ').filter(Boolean);
        // options, the IPVS and conntrack modules, and the field `modinfo -F` is asked for
        const plain = (a: string, i: number) => a.startsWith('-') || MODULE.test(a) || (args[i - 1] === '-F' && /^[a-z]+$/.test(a));
        const odd =
          /pwned|[;|&$`'"<>()\\]/.test(call) ||
          !['modprobe', 'lsmod', 'rmmod', 'modinfo'].includes(prog ?? '') ||
          !args.every(plain);
        if (odd) bad.push(`${h.name}:${file}: ${l}`);
      }
    }
  }
  return bad;
}

/** The sshd logins each host has logged so far (sshd -e writes to the host's console.log). */
function logins(): number[] {
  return lab.hosts.map((h) => {
    const f = join(lab.stateDir, 'hosts', h.name, 'console.log');
    return existsSync(f) ? (readFileSync(f, 'utf8').match(/Accepted publickey/g) ?? []).length : 0;
  });
}

describe.skipIf(!support.ok)('hostile inventories against lab hosts', () => {
  test('control: each payload, handed to a shell unquoted, leaves its marker, and the checks see it', async () => {
    expect(await markers(true)).toEqual([]);
    await strangeModuleCalls(); // the baseline: what booting the hosts logged
    const h = lab.hosts[0]!.name;
    for (const p of PAYLOADS) {
      const quoted = p.context === 'single' ? `'x${p.text}'` : p.context === 'double' ? `"x${p.text}"` : `x${p.text}`;
      await lab.exec(h, `echo ${quoted} >/dev/null; sleep 0.2`);
      expect(await markers(), p.tag).toContain(`${h}:${p.marker}`);
      await lab.exec(h, `rm -f ${p.marker}`);
    }
    expect(await markers()).toEqual([]);
    // the search of the whole filesystem finds one anywhere
    await lab.exec(h, 'mkdir -p /usr/share/kpm-control && touch /usr/share/kpm-control/pwned-control');
    expect(await markers(true)).toEqual([`${h}:/usr/share/kpm-control/pwned-control`]);
    await lab.exec(h, 'rm -r /usr/share/kpm-control');
    // a module name carrying a payload, run by the fixture, is seen in its log
    await lab.exec(h, "modprobe -- 'ip_vs;touch' >/dev/null 2>&1; true");
    expect((await strangeModuleCalls()).join('\n')).toContain("ip_vs;touch");
    expect(await strangeModuleCalls()).toEqual([]);
  });

  test('the corpus is built for this lab', () => {
    expect(corpus.length).toBeGreaterThanOrEqual(100);
    expect(corpus.filter((c) => !isRejected(c.expect) && c.expect.runnable).length).toBeGreaterThanOrEqual(30);
  });

  test('refused inventories: exit 4, the exact message, no host contacted, no marker', async () => {
    const refused = corpus.filter((c) => isRejected(c.expect) && (c.kind === 'injection' || c.markers.length > 0));
    expect(refused.length).toBeGreaterThanOrEqual(50);
    const before = logins();
    for (const c of refused) {
      const r = await runProvision(join(caseDir(c), c.inventory));
      expect(r.code, `${c.name}: ${r.out}`).toBe(4);
      expect(r.err.replaceAll(`${caseDir(c)}/`, ''), c.name).toMatch((c.expect as { reject: RegExp }).reject);
      expect(r.out, c.name).not.toMatch(/PLAY RECAP/);
    }
    expect(logins()).toEqual(before);
    expect(await markers(true)).toEqual([]);
    expect(await strangeModuleCalls()).toEqual([]);
  });

  // Accepted cases run one by one: a dry run, then a real run; the first real run prepares the hosts,
  // the others find them prepared (one exec each), with every hostile value in the inventory around them.
  describe('accepted inventories: dry run and real run, every payload kept and none run', () => {
    const accepted = () => corpus.filter((c) => !isRejected(c.expect) && c.expect.runnable);
    test.each(
      hostileCorpus()
        .filter((c) => !isRejected(c.expect) && c.expect.runnable)
        .map((c) => [c.name] as const),
    )('%s', async (name) => {
      const c = accepted().find((x) => x.name === name)!;
      const inventory = join(caseDir(c), c.inventory);
      const before = logins();
      const dry = await runProvision(inventory, { dryRun: true });
      expect(dry.code, `${dry.out}\n${dry.err}`).toBe(0);
      const real = await runProvision(inventory);
      expect(real.code, `${real.out}\n${real.err}`).toBe(0);
      for (const h of lab.hosts) {
        expect(['ok', 'changed'], `${h.name}: ${real.report.hosts[h.name]?.reason}`).toContain(real.report.hosts[h.name]?.status);
        expect(real.report.hosts[h.name]!.steps.find((s) => s.name === 'verify')?.status).toBe('ok');
      }
      // both runs really connected to every host
      logins().forEach((n, i) => expect(n, lab.hosts[i]!.name).toBeGreaterThan(before[i]!));
      expect(await markers()).toEqual([]);
      expect(await strangeModuleCalls()).toEqual([]);
    });
  });

  test('afterwards the hosts hold exactly the prepared state: both files root-owned with their modes, IPVS modules loaded', async () => {
    for (const h of lab.hosts) {
      const files = await lab.exec(h.name, 'stat -c "%a %U:%G %n" /etc/sysconfig/modules/ipvs.modules /etc/modules-load.d/ipvs.conf');
      expect(files.stdout).toBe('755 root:root /etc/sysconfig/modules/ipvs.modules\n644 root:root /etc/modules-load.d/ipvs.conf\n');
      const loaded = (await lab.exec(h.name, "lsmod | tail -n +2 | cut -d' ' -f1")).stdout.split('\n').filter(Boolean);
      expect(loaded.length).toBeGreaterThan(0);
      for (const m of loaded) expect(m).toMatch(MODULE);
    }
    expect(await markers(true)).toEqual([]);
    expect(await strangeModuleCalls()).toEqual([]);
  });
});
