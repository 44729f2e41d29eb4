/** A real ISO 9660 image for the virtual CD tests, made by genisoimage from a small tree, as an operator would have one. */
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { run } from '../../src/util/exec.js';

/** `<dir>/<name>.iso`: a README and `fillerBytes` of random data, so that sizes can be chosen. */
export async function makeIso(dir: string, name: string, fillerBytes = 1024): Promise<string> {
  const tree = path.join(dir, `${name}-tree`);
  await mkdir(tree, { recursive: true });
  await writeFile(path.join(tree, 'README.TXT'), `the ${name} disc\n`);
  await writeFile(path.join(tree, 'FILLER.BIN'), randomBytes(fillerBytes));
  const iso = path.join(dir, `${name}.iso`);
  await run('genisoimage', ['-quiet', '-V', name.toUpperCase().slice(0, 32), '-o', iso, tree]);
  return iso;
}
