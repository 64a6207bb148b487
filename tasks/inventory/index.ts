// The inventory module's public surface.
export type { Connection, Host, Inventory, NodeSettings, ProxyMode, RunSettings } from './types.ts';
export { InventoryError, LimitError, formatProblem, type Problem } from './errors.ts';
export { detectFormat, loadInventory, MAX_INVENTORY_BYTES, parseInventoryText } from './load.ts';
export { selectTargets, TARGET_GROUP, type SelectOptions } from './limit.ts';
export { readVarsDirs, type VarsDirs } from './vars-dirs.ts';
export { VARIABLES, KUBESPRAY_KUBE_PROXY_VARIABLES, IPVS_SCHEDULERS, PROXY_MODES } from './schema.ts';
