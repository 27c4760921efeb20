/**
 * rpremote's JupyterLab extension: the "RunPod" panel in the left sidebar (DOM id
 * `rpremote-sidebar`), fed by rpremote's Jupyter Server extension.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';

import { RunPodPanel } from './panel';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'rpremote:sidebar',
  description: 'The RunPod sidebar: jobs with live logs, endpoints, Pods and cost.',
  autoStart: true,
  optional: [ILayoutRestorer],
  activate: (app: JupyterFrontEnd, restorer: ILayoutRestorer | null) => {
    const panel = new RunPodPanel(path => {
      void app.commands.execute('docmanager:open', { path });
    });
    app.shell.add(panel, 'left', { rank: 900 });
    restorer?.add(panel, panel.id);
  }
};

export default plugin;
