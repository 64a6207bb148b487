// POSIX shell quoting: the one quoting function of the whole project. Every value that goes into a
// command line sent to a node (package names, paths, script inputs) passes through shQuote.

// Characters that never need quoting in any POSIX shell word position we use (no `=`, so a quoted word
// can never turn into an assignment when it is the first word of a command; no `~`, `#`, `*`, ...).
const SAFE = /^[A-Za-z0-9_@%+:,./-]+$/;

/**
 * Quote one string as a single POSIX shell word (sh, dash, bash, zsh in sh mode).
 * Safe strings are returned as they are; anything else is wrapped in single quotes, with each `'`
 * written as `'\''`. The empty string becomes `''`. A NUL byte cannot be passed in an argument: throws.
 */
export function shQuote(s: string): string {
  if (typeof s !== 'string') throw new TypeError(`shQuote: expected a string, got ${typeof s}`);
  if (s.includes('\0')) throw new TypeError('shQuote: a shell word cannot contain a NUL byte');
  if (s === '') return "''";
  if (SAFE.test(s)) return s;
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Quote each string and join them with single spaces: one shell word per list item. */
export function shWords(list: readonly string[]): string {
  return list.map(shQuote).join(' ');
}
