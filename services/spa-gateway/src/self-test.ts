// A start-up self-test of the knock path: a knock sealed to our own key by a throwaway identity
// must pass every stage. It proves the crypto works on this build before the gateway goes dark,
// and it loads and warms the code the first real knock would otherwise pay for (~5 ms cold).

import { ed25519PublicKeyObject, generateIdentity, type SpaReceiver, sealKnock } from '@umbra/protocol';

const ROUNDS = 20;

export function selfTest(receiver: SpaReceiver): void {
  const identity = generateIdentity();
  const publicKey = ed25519PublicKeyObject(identity.publicKey);
  for (let round = 0; round < ROUNDS; round++) {
    const packet = sealKnock({ gatewayPublicKey: receiver.publicKey, identity, knock: { access: 'tcp/1' } });
    const opened =
      receiver.hasValidShape(packet) && receiver.hasValidMac1(packet) ? receiver.open(packet) : null;
    if (!opened?.ok || !receiver.verifySignature(opened, publicKey))
      throw new Error(
        'self-test failed: a knock sealed to this gateway did not verify; the build or the key is broken',
      );
  }
}
