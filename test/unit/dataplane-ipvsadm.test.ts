import { describe, expect, it } from 'vitest';
import { ipvsServiceKey, parseIpvsadm } from '../../tasks/dataplane/ipvsadm.ts';

// ipvsadm listings: the column layouts ipvsadm prints (see ipvsadm.c print_service_entry / print_title).

describe('parseIpvsadm', () => {
  it('reads the header, virtual services and real servers of -Ln', () => {
    const t = parseIpvsadm(
      [
        'IP Virtual Server version 1.2.1 (size=4096)',
        'Prot LocalAddress:Port Scheduler Flags',
        '  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn',
        'TCP  10.96.0.1:443 rr',
        '  -> 172.18.0.5:6443              Masq    1      3          0         ',
        'UDP  10.96.0.10:53 rr persistent 10800',
        '  -> 10.244.0.2:53                Masq    1      0          7',
      ].join('\n'),
    );
    expect(t).toMatchObject({ version: '1.2.1', size: 4096, format: 'list', unknown: [], lines: 7 });
    expect(t.services).toHaveLength(2);
    expect(t.services[0]).toMatchObject({ protocol: 'TCP', key: 'TCP 10.96.0.1:443', address: '10.96.0.1:443', ip: '10.96.0.1', port: 443, family: 'ipv4', scheduler: 'rr', line: 4 });
    expect(t.services[0]!.realServers).toEqual([
      { address: '172.18.0.5:6443', ip: '172.18.0.5', port: 6443, forwarding: 'Masq', weight: 1, activeConn: 3, inactiveConn: 0, line: 5 },
    ]);
    expect(t.services[1]).toMatchObject({ protocol: 'UDP', persistent: 10800 });
    expect(t.services[1]!.realServers[0]).toMatchObject({ inactiveConn: 7 });
  });

  it('reads scheduler flags, mask, ops, FWM and IPv6 services', () => {
    const t = parseIpvsadm(
      [
        'TCP  10.0.0.1:80 sh (flag-1,flag-2) persistent 360 mask 255.255.255.0 pe sip',
        'UDP  10.0.0.2:53 rr ops',
        'FWM  7 IPv6 wrr',
        '  -> [FD00::0005]:0                Route   2      0          0',
        'SCTP  [fd00::a]:3868 rr',
      ].join('\n'),
    );
    expect(t.unknown).toEqual([]);
    expect(t.services.map((s) => s.key)).toEqual(['TCP 10.0.0.1:80', 'UDP 10.0.0.2:53', 'FWM 7 IPv6', 'SCTP [fd00::a]:3868']);
    expect(t.services[0]).toMatchObject({ scheduler: 'sh', flags: ['flag-1', 'flag-2'], persistent: 360, mask: '255.255.255.0', pe: 'sip' });
    expect(t.services[1]).toMatchObject({ ops: true });
    expect(t.services[2]).toMatchObject({ fwmark: 7, family: 'ipv6', scheduler: 'wrr' });
    expect(t.services[2]!.realServers[0]).toMatchObject({ address: '[fd00::5]:0', ip: 'fd00::5', forwarding: 'Route', weight: 2 });
    expect(t.services[3]).toMatchObject({ protocol: 'SCTP', ip: 'fd00::a', family: 'ipv6' });
  });

  it('reads --stats and --rate columns, with K/M abbreviations', () => {
    const stats = parseIpvsadm(
      [
        'Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes',
        '  -> RemoteAddress:Port',
        'TCP  10.3.0.42:80                    14209   111769    74613     145M    2510K',
        '  -> 10.2.1.22:80                        2       12        8      774      894',
      ].join('\n'),
    );
    expect(stats.format).toBe('stats');
    expect(stats.services[0]!.stats).toEqual({ conns: 14209, inPkts: 111769, outPkts: 74613, inBytes: 145e6, outBytes: 2510e3 });
    expect(stats.services[0]!.scheduler).toBeUndefined();
    expect(stats.services[0]!.realServers[0]!.stats).toEqual({ conns: 2, inPkts: 12, outPkts: 8, inBytes: 774, outBytes: 894 });
    const rate = parseIpvsadm('Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\nTCP  10.0.0.1:443  2  30  25  2400  9800\n  -> 10.1.0.1:443  2  30  25  2400  9800\n');
    expect(rate.format).toBe('rate');
    expect(rate.services[0]!.rate).toEqual({ cps: 2, inPps: 30, outPps: 25, inBps: 2400, outBps: 9800 });
  });

  it('reads --thresholds and --persistent-conn columns', () => {
    const th = parseIpvsadm('Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn\nTCP  10.0.0.1:80 rr\n  -> 10.1.0.1:80    100   10   4   2\n');
    expect(th.format).toBe('thresholds');
    expect(th.services[0]!.realServers[0]).toMatchObject({ upperThreshold: 100, lowerThreshold: 10, activeConn: 4, inactiveConn: 2 });
    const pc = parseIpvsadm('Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn\nTCP  10.0.0.1:80 rr\n  -> 10.1.0.1:80    1   5   4   2\n');
    expect(pc.services[0]!.realServers[0]).toMatchObject({ weight: 1, persistConn: 5, activeConn: 4, inactiveConn: 2 });
  });

  it('reads the save format (-Sn)', () => {
    const t = parseIpvsadm('-A -t 10.20.0.1:443 -s rr -p 10800\n-a -t 10.20.0.1:443 -r 10.19.9.120:6443 -m -w 1\n-a -u 10.20.0.10:53 -r 10.30.1.5:53 -g -w 0 -x 10 -y 2\n');
    expect(t.format).toBe('save');
    expect(t.unknown).toEqual([]);
    expect(t.services.map((s) => [s.key, s.scheduler, s.persistent])).toEqual([
      ['TCP 10.20.0.1:443', 'rr', 10800],
      // an -a line whose -A line was cut off still makes its virtual service
      ['UDP 10.20.0.10:53', undefined, undefined],
    ]);
    expect(t.services[1]!.realServers[0]).toMatchObject({ address: '10.30.1.5:53', forwarding: 'Route', weight: 0, upperThreshold: 10, lowerThreshold: 2 });
  });

  it('reads port names ipvsadm resolved without -n', () => {
    const t = parseIpvsadm('TCP  10.0.0.1:http rr\n  -> 10.1.0.1:postgresql      Masq    1      0          0\n');
    expect(t.services[0]).toMatchObject({ portName: 'http', address: '10.0.0.1:http' });
    expect(t.services[0]!.port).toBeUndefined();
    expect(t.services[0]!.realServers[0]).toMatchObject({ portName: 'postgresql' });
  });

  it('keeps grep separators and shell-loop headers apart from the services', () => {
    const t = parseIpvsadm('>>> node-a\nTCP  10.0.0.1:443 rr\n  -> 10.1.0.1:6443   Masq 1 0 0\n>>> node-b\nTCP  10.0.0.1:443 rr\n--\n  -> 10.1.0.9:6443   Masq 1 0 0\n');
    expect(t.sections).toEqual(['node-a', 'node-b']);
    expect(t.services.map((s) => [s.section, s.realServers.length])).toEqual([['node-a', 1], ['node-b', 0]]);
    expect(t.unknown).toEqual([{ line: 7, text: '-> 10.1.0.9:6443   Masq 1 0 0', reason: 'real server without a virtual service before it' }]);
  });

  it('reports what it cannot read and keeps going', () => {
    const t = parseIpvsadm('TCP  nonsense rr\nhello\nTCP  10.0.0.1:80 rr bogus\n  -> 10.1.0.1:80 Masq 1 0 0\n  -> 10.1.0.2:80 what is this\n-a -t 10.0.0.1:80\n');
    expect(t.unknown.map((u) => [u.line, u.reason])).toEqual([
      [1, 'bad virtual service address'],
      [2, 'not an ipvsadm line'],
      [3, 'unknown virtual service field "bogus"'],
      [5, 'unknown real server columns'],
      [6, 'real server without -r'],
    ]);
    expect(t.services.map((s) => [s.key, s.realServers.length])).toEqual([['TCP 10.0.0.1:80', 1]]);
  });

  it('builds the same key as the listing for an address', () => {
    expect(ipvsServiceKey('tcp', 'FD00::A', 53)).toBe('TCP [fd00::a]:53');
  });
});
