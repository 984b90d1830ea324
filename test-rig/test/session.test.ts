// Issue 3's proofs with the controller's records in SQLite, one controller.
import { sessionProofs } from '../src/session-proofs.ts';

sessionProofs({ storage: 'sqlite' });
