// Golden PCR values as an operator records them from a known-good box: `tpm2_pcrread` output,
//
//     sha256:
//       0 : 0x3D458CFE55CC03EA1F443F1562BEEC8DF51C75E1A...
//       7 : 0x...
//
// or JSON { "sha256": { "0": "3d45...", "7": "..." } }. Banks, indexes and digest lengths are checked
// by the store's own rules (checkBankAndPcrs), so a file is refused here for what the store would
// refuse, with the file and line named.

import { PCR_BANKS, type PcrValues, StoreError } from '../store/index.ts';
import { checkBankAndPcrs } from '../store/validate.ts';
import { AttestationFileError } from './errors.ts';

/** A bank line (`sha256:`) and a PCR line (`7 : 0xABCD...`) of tpm2_pcrread's output. */
const BANK_LINE = /^\s*([A-Za-z0-9_]+)\s*:\s*$/;
const PCR_LINE = /^\s*(\d+)\s*:\s*(?:0x)?([0-9A-Fa-f]+)\s*$/;
/** A whole golden set is a few KiB; a bound before parsing. */
export const MAX_PCR_FILE_BYTES = 64 * 1024;

/** Every bank the file gives, in the order PCR_BANKS lists them. */
export function parsePcrFile(text: string, file: string): PcrValues[] {
  if (text.length > MAX_PCR_FILE_BYTES)
    throw new AttestationFileError(
      `${file}: more than ${MAX_PCR_FILE_BYTES} bytes; expected one set of PCR values`,
    );
  const banks = text.trimStart().startsWith('{') ? fromJson(text, file) : fromPcrread(text, file);
  const sets: PcrValues[] = [];
  for (const [bank, pcrs] of banks) {
    if (Object.keys(pcrs).length === 0) continue; // tpm2_pcrread lists a bank it has no PCRs of
    try {
      sets.push(checkBankAndPcrs(bank, pcrs, 'bank', bank));
    } catch (error) {
      if (!(error instanceof StoreError)) throw error;
      throw new AttestationFileError(`${file}: ${error.message.replace(/^bank: /, `bank "${bank}": `)}`);
    }
  }
  if (sets.length === 0)
    throw new AttestationFileError(
      `${file}: no PCR values found; expected tpm2_pcrread output or { "sha256": { "0": "HEX", ... } }`,
    );
  return sets.sort((a, b) => PCR_BANKS.indexOf(a.bank) - PCR_BANKS.indexOf(b.bank));
}

/**
 * The set to record: the bank asked for, or the strongest the file gives (a quote is over one bank,
 * and the strongest is the one worth comparing).
 */
export function pickPcrBank(sets: readonly PcrValues[], file: string, wanted?: string): PcrValues {
  if (wanted === undefined) return sets.at(-1)!;
  const found = sets.find((set) => set.bank === wanted);
  if (!found)
    throw new AttestationFileError(
      `${file}: no ${wanted} values; the file gives ${sets.map((set) => set.bank).join(', ')}`,
    );
  return found;
}

/** Bank name → { INDEX: digest } as the file spells them, checked by the caller. */
type RawBanks = Map<string, Record<string, unknown>>;

function fromJson(text: string, file: string): RawBanks {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new AttestationFileError(`${file}: not valid JSON (${(error as Error).message})`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new AttestationFileError(`${file}: expected { "sha256": { "0": "HEX", ... } }`);
  const banks: RawBanks = new Map();
  for (const [bank, pcrs] of Object.entries(parsed)) {
    if (typeof pcrs !== 'object' || pcrs === null || Array.isArray(pcrs))
      throw new AttestationFileError(`${file}: "${bank}" must map PCR indexes to hex digests`);
    const digests: Record<string, unknown> = {};
    for (const [index, digest] of Object.entries(pcrs as Record<string, unknown>))
      digests[index] = typeof digest === 'string' ? digest.replace(/^0x/i, '') : digest;
    banks.set(bank, digests);
  }
  return banks;
}

function fromPcrread(text: string, file: string): RawBanks {
  const banks: RawBanks = new Map();
  let current: { bank: string; pcrs: Record<string, string> } | null = null;
  for (const [number, line] of text.split(/\r?\n/).entries()) {
    const where = `${file}: line ${number + 1}`;
    if (line.trim() === '') continue;
    const bankLine = BANK_LINE.exec(line);
    if (bankLine) {
      const bank = bankLine[1]!;
      if (!(PCR_BANKS as readonly string[]).includes(bank))
        throw new AttestationFileError(
          `${where}: bank "${bank}" is not one Umbra compares; expected ${PCR_BANKS.join(', ')}`,
        );
      if (banks.has(bank)) throw new AttestationFileError(`${where}: bank ${bank} is listed twice`);
      current = { bank, pcrs: {} };
      banks.set(bank, current.pcrs);
      continue;
    }
    const pcrLine = PCR_LINE.exec(line);
    if (!pcrLine)
      throw new AttestationFileError(
        `${where}: expected "BANK:" or "INDEX : 0xHEX" as tpm2_pcrread prints them, got ${JSON.stringify(line.trim().slice(0, 80))}`,
      );
    if (current === null)
      throw new AttestationFileError(`${where}: a PCR value before any bank line (such as "sha256:")`);
    const index = String(Number(pcrLine[1]));
    if (index in current.pcrs)
      throw new AttestationFileError(`${where}: PCR ${index} of ${current.bank} is given twice`);
    current.pcrs[index] = pcrLine[2]!;
  }
  return banks;
}
