// Who a certificate speaks for. The name lives in a URI SAN (`umbra://identity/<name>`,
// `umbra://gateway/<name>` or `umbra://controller/<name>`) because that is what the gateway and controller match on; the subject CN
// repeats it only for people reading `openssl x509 -text`. Names are restricted to a plain alphabet so
// that the URI needs no escaping and no two spellings can name the same subject.

import { CertificateRequestError } from './errors.ts';

export type SubjectKind = 'identity' | 'gateway' | 'controller';

export interface CertificateSubject {
  kind: SubjectKind;
  name: string;
}

const SUBJECT_NAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/;
const SUBJECT_URI = /^umbra:\/\/(identity|gateway|controller)\/([^/?#]+)$/;

export function assertSubjectName(name: string, field: string): void {
  if (typeof name !== 'string' || !SUBJECT_NAME.test(name))
    throw new CertificateRequestError(
      `${field}: ${JSON.stringify(name)} is not a valid name; use 1–128 letters, digits, ".", "_", "@" or "-", starting with a letter or digit`,
    );
}

export function subjectUri(subject: CertificateSubject): string {
  return `umbra://${subject.kind}/${subject.name}`;
}

/** The subject a SAN URI names, or null when it is not an Umbra subject URI. */
export function parseSubjectUri(uri: string): CertificateSubject | null {
  const match = SUBJECT_URI.exec(uri);
  if (!match) return null;
  const name = match[2]!;
  if (!SUBJECT_NAME.test(name)) return null;
  return { kind: match[1] as SubjectKind, name };
}
