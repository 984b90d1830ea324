// Issue 3's proofs with the records in PostgreSQL and two controllers sharing it: the admin and the
// client talk to one, the gateway is linked to the other, so every event crosses between them
// through LISTEN/NOTIFY.
import { sessionProofs } from '../src/session-proofs.ts';

sessionProofs({ storage: 'postgres' });
