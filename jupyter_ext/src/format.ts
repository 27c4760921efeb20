/**
 * Words and numbers as the panel shows them: the same status words as rpremote's notebook
 * views (queued / starting / running on W / done / failed / cancelled), short durations and
 * dollar amounts.
 */
import { IJob } from './api';

/** Statuses after which a job changes no more. */
export const FINAL = new Set(['COMPLETED', 'FAILED', 'CANCELLED', 'TIMED_OUT', 'EXPIRED', 'STOPPED', 'UNKNOWN']);

/** Statuses in which a job can still be cancelled. */
export const CANCELLABLE = new Set(['IN_QUEUE', 'IN_PROGRESS', 'RETRYING']);

/** The status filter's choices: [value sent to the server, label]. */
export const STATUS_CHOICES: [string, string][] = [
  ['', 'all'],
  ['IN_QUEUE', 'queued'],
  ['IN_PROGRESS', 'running'],
  ['COMPLETED', 'done'],
  ['FAILED', 'failed'],
  ['CANCELLED', 'cancelled'],
  ['TIMED_OUT', 'timed out']
];

const END_WORDS: Record<string, string> = {
  COMPLETED: 'done',
  FAILED: 'failed',
  CANCELLED: 'cancelled',
  TIMED_OUT: 'timed out',
  EXPIRED: 'expired',
  STOPPED: 'stopped',
  UNKNOWN: 'outcome unknown',
  RETRYING: 'retrying'
};

/** [css state, words] for a job's status. */
export function statusWords(job: IJob): [string, string] {
  const s = job.status ?? '';
  if (!s) {
    return ['submitting', 'submitting'];
  }
  if (s === 'IN_QUEUE') {
    return ['queued', 'queued'];
  }
  if (s === 'IN_PROGRESS') {
    return job.worker ? ['running', `running on ${job.worker}`] : ['starting', 'starting'];
  }
  if (s === 'COMPLETED' && job.error) {
    return ['failed', 'failed'];
  }
  const word = END_WORDS[s];
  return [word ? word.replace(' ', '-') : s.toLowerCase(), word ?? s.toLowerCase()];
}

/** 0.4 s, 12 s, 3 min 5 s, 2 h 10 min. */
export function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !isFinite(seconds) || seconds < 0) {
    return '';
  }
  if (seconds < 10) {
    return `${seconds.toFixed(1)} s`;
  }
  if (seconds < 60) {
    return `${Math.round(seconds)} s`;
  }
  const m = Math.floor(seconds / 60);
  if (m < 60) {
    return `${m} min ${Math.round(seconds - m * 60)} s`;
  }
  const h = Math.floor(m / 60);
  return `${h} h ${m - h * 60} min`;
}

/** $0.0042, $1.23; an em dash for unknown. */
export function usd(value: number | null | undefined): string {
  if (value === null || value === undefined || !isFinite(value)) {
    return '—';
  }
  if (value !== 0 && Math.abs(value) < 0.01) {
    return `$${value.toFixed(4)}`;
  }
  return `$${value.toFixed(2)}`;
}

/** Local clock time of an epoch-seconds instant. */
export function clock(epoch: number | null | undefined): string {
  if (!epoch) {
    return '';
  }
  const d = new Date(epoch * 1000);
  return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}

/**
 * The time column: for a job still waiting, how long it has waited; running, how long it
 * has run; finished, delay + execution.
 */
export function timing(job: IJob, now: number): string {
  const s = job.status ?? '';
  if (s === 'IN_QUEUE' && job.submitted_at) {
    return `waiting ${duration(now - job.submitted_at)}`;
  }
  if (s === 'IN_PROGRESS') {
    const since = job.started_at ?? job.submitted_at;
    return since ? duration(now - since) : '';
  }
  const parts: string[] = [];
  if (job.delay_ms !== null && job.delay_ms !== undefined) {
    parts.push(`${duration(job.delay_ms / 1000)} wait`);
  }
  if (job.execution_ms !== null && job.execution_ms !== undefined) {
    parts.push(`${duration(job.execution_ms / 1000)} run`);
  }
  if (!parts.length && job.finished_at && job.submitted_at) {
    parts.push(duration(job.finished_at - job.submitted_at));
  }
  return parts.join(' + ');
}

/** Where a job ran: the endpoint, with its target when it is not the local one. */
export function where(job: IJob): string {
  const target = job.target ?? '';
  const endpoint = job.endpoint ?? '';
  return target && target !== 'local' ? `${target} · ${endpoint}` : endpoint;
}

/** The first line of a (possibly multi-line) error. */
export function firstLine(text: string | null | undefined): string {
  return (text ?? '').split('\n').find(l => l.trim()) ?? '';
}

/** A source (notebook path, script, "cli") shown short: its last path part. */
export function shortSource(source: string | null | undefined): string {
  if (!source) {
    return '';
  }
  const parts = source.split('/');
  return parts[parts.length - 1] || source;
}
