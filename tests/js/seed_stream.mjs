// The seed's TypeScript snippet, unchanged but for reading the result back:
// TOGETHER_BASE_URL and TOGETHER_API_KEY come from the environment.
import Together from 'together-ai';

const together = new Together();

const stream = await together.chat.completions.create({
  model: 'meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo',
  messages: [
    { role: 'user', content: 'What are some fun things to do in New York?' },
  ],
  stream: true,
  max_tokens: 32,
});

for await (const chunk of stream) {
  process.stdout.write(chunk.choices[0]?.delta?.content || '');
}
