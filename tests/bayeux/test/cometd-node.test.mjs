// CometD (npm `cometd` + `cometd-nodejs-client`, unchanged) in Node against
// the real cometbox binary: the shared scenarios, and the AckExtension.
import { scenarios, ackScenario } from './scenarios.mjs';
import { cometdClient } from '../lib/clients.mjs';

scenarios('cometd', cometdClient);
ackScenario('cometd', cometdClient);

