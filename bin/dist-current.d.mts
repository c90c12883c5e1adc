/** Whether dist/ (`npm run build`) is up to date with src/ (and SWITCHBOARD_FROM_SOURCE is not 1). */
export function distIsCurrent(): boolean;
