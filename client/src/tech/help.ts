// umbra-tech's usage and per-command help.

export const USAGE = `umbra-tech: provision Umbra boxes as a technician

Usage:
  umbra-tech key create --out FILE       make the organisation's provisioning key pair (FILE, FILE.pub)
  umbra-tech bundle create --controller URL --ca FILE --token TOKEN --site NAME
             --network dhcp|static:ADDR/PREFIX,GW [--vlan ID] [--dns IP ...] [--ntp HOST ...]
             [--expires 7d] --sign-key FILE --out FILE
                                         build and sign a site bundle for one box
  umbra-tech provision --port DEV --bundle FILE [--baud 115200]
                                         apply a site bundle to a box over its serial console
  umbra-tech status --port DEV           print the box's hello (serial number, state…) as JSON
  umbra-tech logs --port DEV [--lines N] print the box's recent log lines
  umbra-tech COMMAND --help              help on one command`;

const PORT = `  --port DEV      the serial port the box's console is on, e.g. /dev/ttyUSB0 (you need read/write
                  access to it: the dialout group)
  --baud N        line speed (default 115200, the box's console speed)`;

export const HELP = {
  'key create': `Usage: umbra-tech key create --out FILE

Makes the organisation's provisioning key pair (Ed25519): the private key in FILE (PKCS#8 PEM,
mode 0600; an existing file is never replaced) and the public key in FILE.pub (SPKI PEM). Prints the
key id and the public key as the one line of base64 the firmware's configuration trusts. One key
serves the whole organisation: keep the private half where bundles are made, and build the public
half into the firmware.`,
  'bundle create': `Usage: umbra-tech bundle create --controller URL --ca FILE --token TOKEN --site NAME
         --network dhcp|static:ADDR/PREFIX,GW [options] --sign-key FILE --out FILE

Builds a site bundle — everything one box needs to join its site — signs it with the provisioning
key and writes it to FILE with mode 0600: it holds the enrollment token's secret, so treat it like
the token. Prints one line saying what is in it (never the token).

  --controller URL   the controller's https URL, as in the token
  --ca FILE          the controller's CA certificate (ca.crt); its pin goes into the bundle
  --token TOKEN      a gateway enrollment token for this controller
                     (umbra-controller gateway token create --name GW)
  --site NAME        the site's name, 1-63 letters, digits, spaces, . _ -
  --network MODE     dhcp, or static:ADDR/PREFIX,GW e.g. static:192.0.2.10/24,192.0.2.1
  --vlan ID          802.1Q VLAN of the uplink, 1-4094 (untagged when absent)
  --dns IP           a DNS server; repeat or separate with commas, at most 4 (static needs one
                     unless --controller is an address)
  --ntp HOST         an NTP server; repeat or separate with commas, at most 4
  --expires AGE      how long the bundle is valid: 30m, 24h, 7d (default 7d, at most 90d)
  --sign-key FILE    the provisioning private key (umbra-tech key create), mode 0600
  --out FILE         where to write the bundle; an existing file is kept unless --force`,
  provision: `Usage: umbra-tech provision --port DEV --bundle FILE [--baud 115200] [--timeout 2m]

Applies a site bundle to a box over its serial console. Shows the box's serial number, firmware,
EK hash and state, sends the bundle, shows each step the box reports (checking the bundle, the
network, enrolling), and ends with the box's result.
Exits 0 when the box applied it, 1 when the box refused (its reason is printed; the box is left as
it was, ready for the next try) or the link failed, 2 when an option is wrong.

${PORT}
  --bundle FILE   the site bundle (umbra-tech bundle create)
  --timeout AGE   how long to wait for the box's next step (default 2m)`,
  status: `Usage: umbra-tech status --port DEV [--baud 115200]

Prints the box's hello as JSON: versions, serialNumber, firmwareVersion, ekHash (what a controller
claim names), state (unprovisioned, provisioning, enrolling, enrolled) and lastError when its last
attempt failed.

${PORT}`,
  logs: `Usage: umbra-tech logs --port DEV [--lines N] [--baud 115200]

Prints the box's most recent log lines (its provisioner's log), oldest first.

${PORT}
  --lines N       how many lines, 1 to 100 (default: as many as the box gives, at most 100)`,
} as const;
