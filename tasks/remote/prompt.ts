import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';

// -K / --ask-become-pass: read the sudo password from the terminal without echoing it.
export async function promptSecret(question: string): Promise<string> {
  if (!process.stdin.isTTY) {
    throw new Error('--ask-become-pass needs a terminal; without one, set KPM_BECOME_PASSWORD instead');
  }
  let muted = false;
  const output = new Writable({
    write(chunk, _enc, cb) {
      if (!muted) process.stderr.write(chunk);
      cb();
    },
  });
  const rl = createInterface({ input: process.stdin, output, terminal: true });
  try {
    return await new Promise<string>((resolve) => {
      rl.question(question, (answer) => resolve(answer));
      muted = true;
    });
  } finally {
    rl.close();
    process.stderr.write('\n');
  }
}
