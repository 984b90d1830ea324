// The test rig: namespace topologies and the tools that run inside them.
export * from './capture.ts';
export * from './controller.ts';
export * from './fwknop.ts';
export * from './lines.ts';
export * from './net.ts';
export * from './scan.ts';
export * from './topology.ts';
export * from './umbra.ts';
