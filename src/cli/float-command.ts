import { loadFloatConfig, readFloatMaterials } from '../config/float-load.ts';
import { startFloat } from '../float/float.ts';
import { createLogger } from '../log.ts';

/** `switchboard float --config float.yaml`: runs the DMZ relay until SIGTERM or SIGINT. */
export async function floatCommand(file: string): Promise<void> {
  const { config, file: path } = loadFloatConfig(file);
  const materials = readFloatMaterials(config);
  const log = createLogger(config.log.level);
  const float = await startFloat({ config, materials, log });
  log.info({ config: path, tunnelPort: float.tunnelPort, peerPort: float.peerPort }, 'Switchboard float is running');
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'float stopping');
    float.stop().then(() => process.exit(0), (err) => {
      log.error({ err: (err as Error).message }, 'error while stopping');
      process.exit(1);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
