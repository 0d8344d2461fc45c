// The NBD server's public surface.
export { NbdServer, type NbdServerOptions } from './server.js';
export { NbdExport, type ExportOptions } from './export.js';
export { serveFile, type ServeFileOptions, type ServedFile } from './serve-file.js';
