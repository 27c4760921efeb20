/**
 * The sidebar's side of the REST contract served by rpremote's Jupyter Server extension
 * (rpremote/jupyter/) under `<base_url>/rpremote/api/`. Requests go through
 * ServerConnection so they carry the server's token and XSRF cookie like every Jupyter API.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** One row of the job journal (times are epoch seconds). */
export interface IJob {
  id: string;
  name: string | null;
  kind: string | null;
  target: string | null;
  endpoint: string | null;
  gpu: string | null;
  status: string | null;
  worker: string | null;
  submitted_at: number | null;
  started_at: number | null;
  finished_at: number | null;
  delay_ms: number | null;
  execution_ms: number | null;
  cost_usd: number | null;
  error: string | null;
  source: string | null;
  cell: string | number | null;
  /** The source as a path under the Jupyter server's root, null when it is not there. */
  source_path?: string | null;
}

export interface IJobDetail extends IJob {
  traceback: string | null;
  logs_size: number | null;
}

export interface IJobList {
  jobs: IJob[];
  now: number;
  sources: string[];
}

export interface ILogChunk {
  text: string;
  offset: number;
  done: boolean;
}

export interface IEndpoint {
  id: string;
  name?: string | null;
  gpu: string | null;
  workers?: { idle?: number; running?: number; initializing?: number; [k: string]: number | undefined };
  queue?: { inQueue?: number; inProgress?: number; [k: string]: number | undefined };
  usd_per_h?: number | null;
  pool?: string | null;
}

export interface IEndpoints {
  local: { running: boolean; url: string | null; endpoints: IEndpoint[]; error: string | null };
  runpod: { configured: boolean; endpoints: IEndpoint[]; error: string | null };
}

export interface IPod {
  id: string;
  name: string | null;
  status: string | null;
  gpu: string | null;
  count: number | null;
  uptime_s: number | null;
  usd_per_h: number | null;
  cost_so_far_usd: number | null;
  url: string | null;
}

export interface IPods {
  pods: IPod[];
  error: string | null;
  configured?: boolean;
}

export interface ICost {
  today_usd: number | null;
  month_usd: number | null;
  burn_usd_per_h: number | null;
}

/** A request that failed, with the words to show for it in the panel. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number | null
  ) {
    super(message);
  }
}

/**
 * Told after each request whether rpremote's server extension answered: null when it did
 * (or the failure was another one), the words to show when it is not there at all (a 404
 * that is not rpremote's JSON), so the panel says it once instead of in every section.
 */
let onServerSide: ((missing: string | null) => void) | null = null;

export function watchServerSide(callback: ((missing: string | null) => void) | null): void {
  onServerSide = callback;
}

/**
 * Calls `rpremote/api/<path>` and returns its JSON body. Any failure — the server
 * unreachable, the extension not loaded (404 HTML), an `{"error": ...}` body — becomes an
 * ApiError whose message says what went wrong in words.
 */
export async function requestAPI<T>(path: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'rpremote', 'api', path);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (err) {
    throw new ApiError(`cannot reach the Jupyter server (${(err as Error).message ?? err})`, null);
  }
  const text = await response.text();
  let data: any = null;
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    data = null;
  }
  if (!response.ok) {
    const said = data && (data.error || data.message || data.reason);
    if (said) {
      onServerSide?.(null);
      throw new ApiError(String(said), response.status);
    }
    if (response.status === 404) {
      onServerSide?.(
        'The rpremote server extension is not loaded in this Jupyter server. Install ' +
          'rpremote[jupyter] in the environment that runs Jupyter (pip install "rpremote[jupyter]"), ' +
          'then restart Jupyter.'
      );
      throw new ApiError(
        'the rpremote server extension is not loaded in this Jupyter server (404): ' +
          'install rpremote[jupyter] in the environment that runs Jupyter and restart it',
        404
      );
    }
    if (response.status === 403) {
      throw new ApiError('the Jupyter server refused the request (403): reload the page to log in again', 403);
    }
    throw new ApiError(`the Jupyter server answered ${response.status} ${response.statusText}`, response.status);
  }
  onServerSide?.(null);
  if (data === null) {
    throw new ApiError('the Jupyter server answered something that is not JSON', response.status);
  }
  return data as T;
}

/** Query string from the given parameters, leaving out empty ones. */
export function query(params: Record<string, string | number | null | undefined>): string {
  const parts = Object.entries(params)
    .filter(([, v]) => v !== null && v !== undefined && v !== '')
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`);
  return parts.length ? `?${parts.join('&')}` : '';
}
