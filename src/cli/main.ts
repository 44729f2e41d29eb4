export async function main(argv: string[]): Promise<number> {
  console.log('lockstep', argv.join(' '));
  return 0;
}
