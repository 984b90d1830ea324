// A standalone gateway's admission: the clients in its configuration file, each with the accesses
// it may open, decided on the spot with no controller.

import { type Knock, parseAccess } from '@umbra/protocol';
import type { Logger } from 'pino';
import { allows } from './access.ts';
import type { Client } from './config.ts';
import type { Firewall } from './firewall/index.ts';
import type { Datagram } from './frame.ts';
import { logPinholeOpened } from './opened-log.ts';
import type { KnockAdmission, KnownIdentity } from './pipeline.ts';
import type { RejectReason } from './rejections.ts';

export class StandaloneAdmission implements KnockAdmission {
  accepted = 0;
  private readonly clients = new Map<string, Client>();
  private readonly firewall: Firewall;
  private readonly log: Logger;

  constructor(options: { clients: readonly Client[]; firewall: Firewall; log: Logger }) {
    for (const client of options.clients) this.clients.set(client.identityId.toString('hex'), client);
    this.firewall = options.firewall;
    this.log = options.log;
  }

  identify(identityHex: string): KnownIdentity | undefined {
    return this.clients.get(identityHex);
  }

  admit(
    knock: Knock,
    _opened: unknown,
    identity: KnownIdentity,
    datagram: Datagram,
  ): RejectReason | undefined {
    const client = identity as Client;
    const access = parseAccess(knock.access);
    if (!access || !allows(client.allow, access.protocol, access.port)) return 'not-allowed';
    try {
      this.firewall.open({
        source: datagram.source,
        protocol: access.protocol,
        port: access.port,
        ttlSeconds: client.ttlSeconds,
      });
    } catch (error) {
      this.log.error(
        { source: datagram.source, identity: client.name, err: error },
        'could not open the pinhole',
      );
      return 'firewall';
    }
    this.accepted++;
    logPinholeOpened(this.log, datagram, {
      identity: client.name,
      access: knock.access,
      ttlSeconds: client.ttlSeconds,
    });
    return undefined;
  }
}
