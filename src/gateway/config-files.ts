import { readMaterials, type Materials } from '../config/materials.ts';
import type { Config } from '../config/schema.ts';
import { loadFlows } from '../flows/loader.ts';
import type { FlowDefinitions } from './flows.ts';

export interface ConfigFiles {
  flowDefs: FlowDefinitions;
  materials: Materials;
}

/**
 * Step 1: every file the config names — the flow files, then the key and certificate files —
 * read before anything is started, so a broken flow or a missing key stops the start with
 * nothing to undo, and no later step touches the file system.
 */
export async function readConfigFiles(config: Config): Promise<ConfigFiles> {
  const flowDefs = await loadFlows(config.flows.dir);
  const materials = readMaterials(config);
  return { flowDefs, materials };
}
