/**
 * The RunPod sidebar panel. It polls the server extension about once a second while it is
 * visible (and the browser tab is), one poll at a time, and stops when hidden (endpoints and
 * Pods every third poll: they may cost a call to RunPod). Either the
 * list (cost, jobs, endpoints, Pods) or one job's detail is shown.
 */
import { LabIcon } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { watchServerSide } from './api';
import { JobDetail } from './detail';
import { h, setText } from './dom';
import { JobsSection } from './jobs';
import { CostSection, EndpointsSection, PodsSection } from './resources';

export const POLL_MS = 1000;

export const runpodIcon = new LabIcon({
  name: 'rpremote:runpod',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">' +
    '<g class="jp-icon3" fill="#616161">' +
    '<path d="M7 7h10v10H7z" fill-opacity="0" stroke="#616161" stroke-width="2" class="jp-icon3"/>' +
    '<path d="M10 10h4v4h-4z"/>' +
    '<path d="M9 2h2v3H9zM13 2h2v3h-2zM9 19h2v3H9zM13 19h2v3h-2zM2 9h3v2H2zM2 13h3v2H2zM19 9h3v2h-3zM19 13h3v2h-3z"/>' +
    '</g></svg>'
});

export class RunPodPanel extends Widget {
  private readonly jobs: JobsSection;
  /** Each section with how many polls apart it is refreshed: the job journal and the cost
   * are local SQLite reads (every poll); endpoints and Pods may ask RunPod (every 3rd). */
  private readonly sections: [{ refresh(): Promise<void> }, number][];
  private polls = 0;
  private readonly listView: HTMLElement;
  private readonly detailHost: HTMLElement;
  private readonly updated: HTMLElement;
  private readonly banner: HTMLElement;
  private detail: JobDetail | null = null;
  private timer: number | null = null;
  private polling = false;
  private again = false;
  private ticker: number | null = null;

  constructor(private readonly openPath: (path: string) => void) {
    super();
    this.id = 'rpremote-sidebar';
    this.addClass('rp-sidebar');
    this.title.icon = runpodIcon;
    this.title.caption = 'RunPod: jobs, endpoints, Pods and cost';

    this.jobs = new JobsSection(
      id => this.showJob(id),
      () => void this.pollNow()
    );
    const cost = new CostSection();
    const endpoints = new EndpointsSection();
    const pods = new PodsSection();
    this.sections = [
      [this.jobs, 1],
      [cost, 1],
      [endpoints, 3],
      [pods, 3]
    ];

    this.updated = h('span', { class: 'rp-updated', 'aria-live': 'off' });
    this.banner = h('p', { class: 'rp-error rp-banner', role: 'alert', 'data-role': 'unavailable', hidden: true });
    watchServerSide(missing => {
      setText(this.banner, missing ?? '');
      this.banner.hidden = missing === null;
      this.node.classList.toggle('rp-unavailable', missing !== null);
    });
    this.listView = h('div', { class: 'rp-list' }, cost.node, this.jobs.node, endpoints.node, pods.node);
    this.detailHost = h('div', { class: 'rp-detail-host', hidden: true });
    this.node.append(
      h('header', { class: 'rp-header' }, h('h2', { class: 'rp-title' }, 'RunPod'), this.updated),
      h('div', { class: 'rp-scroll' }, this.banner, this.listView, this.detailHost)
    );
  }

  /** Opens one job's detail view (also used by the row buttons). */
  showJob(id: string): void {
    this.detail = new JobDetail(id, () => this.showList(), this.openPath);
    this.detailHost.replaceChildren(this.detail.node);
    this.listView.hidden = true;
    this.detailHost.hidden = false;
    (this.detail.node.querySelector('button') as HTMLButtonElement | null)?.focus();
    void this.pollNow();
  }

  showList(): void {
    const id = this.detail?.jobId;
    this.detail = null;
    this.detailHost.replaceChildren();
    this.detailHost.hidden = true;
    this.listView.hidden = false;
    this.polls = 0; // everything at once on the way back
    void this.pollNow();
    if (id) {
      const row = this.node.querySelector(`[data-job-id="${CSS.escape(id)}"] .rp-job-name`) as HTMLElement | null;
      row?.focus();
    }
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.start();
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    document.addEventListener('visibilitychange', this.onVisibility);
    if (this.isVisible) {
      this.start();
    }
  }

  protected onBeforeHide(msg: Message): void {
    super.onBeforeHide(msg);
    this.stop();
  }

  protected onBeforeDetach(msg: Message): void {
    document.removeEventListener('visibilitychange', this.onVisibility);
    this.stop();
    super.onBeforeDetach(msg);
  }

  dispose(): void {
    this.stop();
    watchServerSide(null);
    super.dispose();
  }

  private readonly onVisibility = (): void => {
    if (document.hidden) {
      this.stop();
    } else if (this.isVisible) {
      this.start();
    }
  };

  private start(): void {
    this.polls = 0; // shown again: everything at once
    if (this.ticker === null) {
      this.ticker = window.setInterval(() => this.jobs.tick(), 1000);
    }
    if (this.timer === null && !this.polling) {
      void this.pollNow();
    }
  }

  private stop(): void {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.ticker !== null) {
      window.clearInterval(this.ticker);
      this.ticker = null;
    }
  }

  /** One poll of what is on screen, then the next one POLL_MS later while visible. */
  private async pollNow(): Promise<void> {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.polling) {
      this.again = true; // a filter changed or a view opened mid-poll: poll once more at once
      return;
    }
    this.polling = true;
    try {
      if (this.detail) {
        await this.detail.refresh();
      } else {
        const n = this.polls++;
        await Promise.all(this.sections.filter(([, every]) => n % every === 0).map(([s]) => s.refresh()));
      }
      setText(this.updated, `updated ${new Date().toLocaleTimeString()}`);
    } finally {
      this.polling = false;
    }
    if (this.again && !this.isDisposed) {
      this.again = false;
      return this.pollNow();
    }
    if (this.isVisible && !document.hidden && !this.isDisposed) {
      this.timer = window.setTimeout(() => {
        this.timer = null;
        void this.pollNow();
      }, POLL_MS);
    }
  }
}
