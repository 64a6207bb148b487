import { readFileSync } from 'node:fs';
import { shQuote } from '../remote/quote.ts';
import { itemLabel, type CleanupItem, type CleanupPlan } from './old-mode-plan.ts';
import { cleanupReadScript } from './old-mode-read.ts';

// A cleanup plan as the one bash script that applies it (old-mode-apply.sh), followed by the same read
// the plan was made from, so that what is left is judged exactly as what was there.

export const READBACK_MARKER = '@@kpm:cleanup-readback';

let library: string | undefined;

const b64 = (text: string) => Buffer.from(text, 'utf8').toString('base64');

const IPVSADM_FLAG = { TCP: '-t', UDP: '-u', SCTP: '--sctp-service' } as const;

/** One line of the plan as old-mode-apply.sh reads it: the kind, then base64 fields. */
function planLine(item: CleanupItem): string {
  const label = b64(itemLabel(item));
  switch (item.kind) {
    case 'virtual-server':
      return ['vs', label, b64(IPVSADM_FLAG[item.protocol]), b64(item.address)].join(' ');
    case 'rule':
    case 'chain': {
      const family = b64(item.family === 'ipv4' ? '4' : '6');
      return [item.kind, family, b64(item.table), label, b64(item.kind === 'rule' ? item.rule : item.chain)].join(' ');
    }
    case 'ipset':
      return ['ipset', label, b64(item.name)].join(' ');
    case 'link':
      return ['link', label, b64(item.name)].join(' ');
    case 'nft-table':
      return ['nft', label, b64(item.family), b64(item.name)].join(' ');
  }
}

export function cleanupApplyScript(plan: CleanupPlan): string {
  library ??= readFileSync(new URL('./old-mode-apply.sh', import.meta.url), 'utf8');
  const encoded = b64(plan.items.map(planLine).join('\n') + '\n');
  return [
    `(\nKPM_CLEANUP=${shQuote(encoded)}\n${library}\n)`,
    `printf '%s\\n' ${shQuote(READBACK_MARKER)}`,
    cleanupReadScript(),
  ].join('\n');
}
