#!/usr/bin/env node
import { launch } from '@umbra/cli-kit/launch';

await launch('umbra-tech', new URL('../src/tech/cli.ts', import.meta.url).href);
