#!/usr/bin/env node
import { launch } from '@umbra/cli-kit/launch';

await launch('umbra-provisioner', new URL('../src/cli.ts', import.meta.url).href);
